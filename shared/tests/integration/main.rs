//! Integration tests against a real moto server (DynamoDB, SQS, Secrets Manager).
//! One test binary, one moto server; each test makes its own table and queues.

mod claim_check;
mod claims;
mod crashes;
mod deadline;
mod dev_env;
mod faults;
mod helpers;
mod lambda_host;
mod logs;
mod metrics;
mod ops;
mod processor;
mod processor_faults;
mod races;
mod receiver_faults;
mod samples;
mod soak;
mod sqs_legal;
mod template;
mod tenants;
mod tilby;
mod tribe;
mod tribemade;
mod trifft;
mod trust;
mod trybe;

//! Integration tests against a real moto server (DynamoDB, SQS, Secrets Manager).
//! One test binary, one moto server; each test makes its own table and queues.

mod helpers;
mod processor;
mod tilby;
mod trifft;
mod trybe;

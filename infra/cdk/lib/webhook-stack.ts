import {
  Aws,
  CfnCondition,
  CfnDeletionPolicy,
  CfnElement,
  CfnMapping,
  CfnOutput,
  CfnParameter,
  CfnResource,
  CfnRule,
  Duration,
  Fn,
  RemovalPolicy,
  Stack,
  StackProps,
  Token,
  Validations,
} from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import * as path from 'node:path';
import { PROCESSOR, PROVIDERS } from './providers';

export type LambdaArchitecture = 'arm64' | 'x86_64';

/** The buckets' customer-managed key: its ARN, and the condition it exists under. */
interface ObjectsKey {
  readonly arn: string;
  readonly condition: CfnCondition;
}

export interface WebhookIntakeStackProps extends StackProps {
  /**
   * What the functions are built for and deployed as. A build-time choice (cargo-lambda's
   * target), so it is context, not only a parameter: the `Architecture` parameter exists for
   * parity with the SAM template, and a rule refuses any other value at deploy time.
   */
  readonly architecture: LambdaArchitecture;
}

/** The workspace root: RustFunction runs `cargo lambda build --bin <binary>` there. */
const WORKSPACE_MANIFEST = path.join(__dirname, '..', '..', '..', 'Cargo.toml');

/** Receivers: between their deadline (REQUEST_DEADLINE_MS) and their lease (twice it). */
const REQUEST_DEADLINE_MS = '5000';
const RECEIVER_TIMEOUT = Duration.seconds(8);
const PROCESSOR_TIMEOUT = Duration.seconds(60);
// Receivers: 256 MB for the CPU share (a 10 MiB body: 3.3 s at it, 6.6 s at 128 MB's, past the
// 5 s deadline); the processor 128 MB (ten 1 MiB messages peak at 39 MiB, 12.6 s of its 60 s).
// As in template.yaml; BENCHMARKS.md "Issue 21".
const MEMORY_MB = 256;
const PROCESSOR_MEMORY_MB = 128;
const ALARM_PERIOD = Duration.minutes(5);
const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/**
 * The webhook intake stack: the same resources, parameters, conditions, alarms and outputs as
 * infra/template.yaml (SAM), generated from PROVIDERS. `make cdk-check` compares the two.
 */
export class WebhookIntakeStack extends Stack {
  private readonly params: Record<string, CfnParameter> = {};

  constructor(scope: Construct, id: string, props: WebhookIntakeStackProps) {
    super(scope, id, props);
    const arch = props.architecture;

    // ---- Parameters (the SAM template's names, types, defaults and bounds) ----
    const architecture = this.param('Architecture', {
      type: 'String',
      allowedValues: ['arm64', 'x86_64'],
      default: arch,
      description: `Lambda architecture. This CDK app built the functions for ${arch} (context "architecture"); any other value is refused.`,
    });
    new CfnRule(this, 'ArchitectureMatchesBuild', {
      assertions: [
        {
          assert: Fn.conditionEquals(architecture.valueAsString, arch),
          assertDescription: `The functions were built for ${arch}: synthesize with -c architecture=<value> to change it.`,
        },
      ],
    });
    this.param('DedupTtlSeconds', { type: 'Number', default: 604800 });
    const payloadRetention = this.param('PayloadRetentionDays', {
      type: 'Number',
      default: 29,
      minValue: 1,
      description:
        "Days the payload bucket keeps an event too large for a message (the message carries its key). Objects must outlive any message that references them: the dedup horizon (DedupTtlSeconds, 7 days), and a message's life: up to 14 days from its send on the queue and then the dead-letter queue together (MessageRetentionPeriod 1209600 on both; a standard queue's dead-letter queue keeps the enqueue time), and each `webhook-ops dlq redrive` sends it anew for up to 14 more days. 29 = 14 + 14 + 1 day for lifecycle rounding covers the first pass and one redrive; each further redrive needs 14 days more. `webhook-ops dlq redrive` refuses a message whose object has expired (replay it from the archive).",
    });
    const archiveEnabled = this.param('ArchiveEnabled', {
      type: 'String',
      allowedValues: ['true', 'false'],
      default: 'false',
      description:
        "Archive every accepted request's raw body and verified metadata, never credentials, to S3 under <provider>/<date>/..., for `webhook-ops replay`.",
    });
    const archiveRetention = this.param('ArchiveRetentionDays', {
      type: 'Number',
      default: 90,
      minValue: 1,
      description: 'Days the archive bucket keeps an archived request (with ArchiveEnabled).',
    });
    const bucketEncryptionKey = this.param('BucketEncryptionKey', {
      type: 'String',
      allowedValues: ['none', 'create'],
      default: 'none',
      description:
        '"none": both buckets use SSE-S3. "create": the stack creates a customer-managed KMS key (rotated yearly, retained on delete) and both buckets use SSE-KMS with it and a bucket key; the receivers put with it (OBJECTS_KMS_KEY_ARN), the processor may decrypt, and operators who read objects need kms:Decrypt on it in their own IAM policies (docs/deploy.md).',
    });
    const operators = this.param('OperatorPrincipalIds', {
      type: 'CommaDelimitedList',
      default: '',
      description:
        "The IAM unique ids of the operator roles and users, who may replay and redrive for any provider and read both buckets (\"\" = nobody). A role's id: `aws iam get-role --role-name NAME --query Role.RoleId` (AROA...); your own: `aws sts get-caller-identity --query UserId`, the part before ':'.",
    }).valueAsList;
    const maxMessageBytes = this.param('MaxMessageBytes', {
      type: 'Number',
      default: 1048576,
      minValue: 1024,
      maxValue: 1048576,
      description:
        "The queue's MaximumMessageSize and the receivers' MAX_MESSAGE_BYTES (one value: a message the queue would refuse is answered 413 before anything is claimed). SQS allows 1 MiB.",
    });
    this.param('MaxEventsPerRequest', {
      type: 'Number',
      default: 200,
      minValue: 1,
      description: 'Events one request may carry (Tilby imports carry up to 80); more get 413.',
    });
    const burstLimit = this.param('ApiThrottlingBurstLimit', {
      type: 'Number',
      default: 200,
      minValue: 1,
      description:
        'HTTP API stage burst limit (requests). Beyond it API Gateway answers 429 without invoking a function, so a flood of unauthenticated requests cannot take the account\'s concurrency; providers retry a 429.',
    });
    const rateLimit = this.param('ApiThrottlingRateLimit', {
      type: 'Number',
      default: 100,
      minValue: 1,
      description: 'HTTP API stage steady-state rate limit (requests per second).',
    });
    this.param('ReceiverReservedConcurrency', {
      type: 'String',
      default: '',
      allowedPattern: '^[0-9]*$',
      description:
        'Reserved concurrency of each receiver ("" = none: they share the account\'s pool). Reserving both guarantees and caps it; size it above your providers\' peak.',
    });
    const maxConcurrency = this.param('ProcessorMaximumConcurrency', {
      type: 'Number',
      default: 5,
      minValue: 2,
      maxValue: 1000,
      description:
        "The SQS event source's ScalingConfig.MaximumConcurrency: at most this many processor invocations at once. Throttled SQS deliveries are not counted against maxReceiveCount when this bounds the processor, so good messages do not drift into the dead-letter queue.",
    });
    this.param('ProcessorReservedConcurrency', {
      type: 'String',
      default: '',
      allowedPattern: '^[0-9]*$',
      description:
        'Reserved concurrency of the processor ("" = none). If set, keep it at or above ProcessorMaximumConcurrency, or throttles count against maxReceiveCount again.',
    });
    this.param('LogRetentionDays', {
      type: 'Number',
      default: '30', // a string, as its AllowedValues (CfnParameter takes strings)
      allowedValues: LOG_RETENTION_DAYS.map(String),
      description: "Retention of every function's log group.",
    });
    const namespace = this.param('MetricsNamespace', {
      type: 'String',
      default: 'WebhookIntake',
      description: "CloudWatch namespace of the functions' metrics (embedded metric format).",
    }).valueAsString;
    const alarmTopic = this.param('AlarmTopicArn', {
      type: 'String',
      default: '',
      description: 'SNS topic notified when an alarm fires and when it clears ("" = no notification).',
    });
    const errorRatePercent = this.param('ReceiverErrorRateAlarmPercent', {
      type: 'Number',
      default: 1,
      description: 'Alarm when more than this percentage of webhook requests get a 5xx over 5 minutes.',
    });
    const unauthorizedThreshold = this.param('UnauthorizedAlarmThreshold', {
      type: 'Number',
      default: 20,
      description: "Alarm when one provider's receiver refuses more than this many requests with 401 in 5 minutes.",
    });
    const conflictThreshold = this.param('ConflictAlarmThreshold', {
      type: 'Number',
      default: 10,
      description: 'Alarm when more than this many events are answered "in flight" or "conflict" in 5 minutes.',
    });
    const oldestAgeSeconds = this.param('OldestMessageAgeAlarmSeconds', {
      type: 'Number',
      default: 600,
      description: 'Alarm when the oldest message on the events queue is older than this.',
    });
    const retryHorizon = this.param('RetryHorizonHours', {
      type: 'Number',
      // A string, as its allowed values are: cfn-lint compares them as written.
      default: '24',
      allowedValues: ['1', '6', '12', '24', '48', '72'],
      description:
        'The longest outage (of DynamoDB, S3, or what a handler calls) that the processor waits out without losing an event to the dead-letter queue. A failed record is hidden 1 minute, then 2, 4, … doubling to an hour (+0-10 % jitter), and the queue\'s maxReceiveCount is the fewest receives whose waits span the horizon (RetryHorizon mapping). After an outage an event waits at most one wait more, 66 minutes. RetryHorizonAlarm fires at three quarters of it.',
    });
    // From RetryHorizonHours: the events queue's maxReceiveCount, the fewest receives whose waits
    // (shared::queue::Backoff: 1 minute doubling to an hour, jitter only on top) add up to the
    // horizon; and RetryHorizonAlarm's threshold, three quarters of the horizon, in milliseconds.
    // The SAM template's mapping, which a template test recomputes from the code.
    const retryMapping = new CfnMapping(this, 'RetryHorizon', {
      mapping: {
        '1': { MaxReceiveCount: 7, AlarmAgeMilliseconds: 2700000 },
        '6': { MaxReceiveCount: 12, AlarmAgeMilliseconds: 16200000 },
        '12': { MaxReceiveCount: 18, AlarmAgeMilliseconds: 32400000 },
        '24': { MaxReceiveCount: 30, AlarmAgeMilliseconds: 64800000 },
        '48': { MaxReceiveCount: 54, AlarmAgeMilliseconds: 129600000 },
        '72': { MaxReceiveCount: 78, AlarmAgeMilliseconds: 194400000 },
      },
    });
    const fromRetryHorizon = (key: string) =>
      Token.asNumber(retryMapping.findInMap(retryHorizon.valueAsString, key));
    for (const p of PROVIDERS) {
      for (const s of p.secrets) {
        this.param(s.parameter, {
          type: 'String',
          default: '',
          description: `Secrets Manager ARN holding ${s.variable} (${s.holds ? `${s.holds}; ` : ''}empty = not configured).`,
        });
      }
    }
    for (const p of PROVIDERS) {
      for (const s of p.settings) {
        this.param(s.parameter, {
          type: 'String',
          default: '',
          allowedPattern: s.allowedPattern,
          description: s.description,
        });
      }
    }

    Validations.of(this).acknowledge(
      {
        id: 'CloudFormation-Validate::W2509',
        reason: 'The *Arn parameters hold the ARNs of Secrets Manager secrets, not the secrets.',
      },
      {
        id: 'CloudFormation-Validate::W1030',
        reason: 'AlarmActions/OKActions name AlarmTopicArn only under HasAlarmTopic, when it is not empty.',
      },
    );

    // ---- Conditions ----
    for (const p of PROVIDERS) for (const s of p.secrets) this.notEmpty(`Has${s.parameter}`, s.parameter);
    const hasReceiverReserved = this.notEmpty('HasReceiverReservedConcurrency', 'ReceiverReservedConcurrency');
    const hasProcessorReserved = this.notEmpty('HasProcessorReservedConcurrency', 'ProcessorReservedConcurrency');
    const hasAlarmTopic = this.notEmpty('HasAlarmTopic', 'AlarmTopicArn');
    const archiveOn = new CfnCondition(this, 'ArchiveOn', {
      expression: Fn.conditionEquals(archiveEnabled.valueAsString, 'true'),
    });
    const keyOn = new CfnCondition(this, 'ObjectsKeyOn', {
      expression: Fn.conditionEquals(bucketEncryptionKey.valueAsString, 'create'),
    });
    const hasOperators = new CfnCondition(this, 'HasOperators', {
      expression: Fn.conditionNot(Fn.conditionEquals(Fn.join(',', operators), '')),
    });

    // ---- Storage: the claim table, the queue and its dead-letter queue ----
    const table = new dynamodb.Table(this, 'EventsTable', {
      partitionKey: { name: 'pk', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      timeToLiveAttribute: 'expires_at',
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      // Kept when the stack is deleted or the table replaced: the claims are what stops a
      // provider's retry from being queued twice.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    named(table, 'EventsTable');

    const deadLetterQueue = new sqs.Queue(this, 'EventsDeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
    });
    named(deadLetterQueue, 'EventsDeadLetterQueue');
    const queue = new sqs.Queue(this, 'EventsQueue', {
      visibilityTimeout: Duration.seconds(360),
      retentionPeriod: Duration.days(14),
      maxMessageSizeBytes: maxMessageBytes.valueAsNumber,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      // The processor hides a failed record for a growing wait: these receives span
      // RetryHorizonHours.
      deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: fromRetryHorizon('MaxReceiveCount') },
    });
    named(queue, 'EventsQueue');

    // ---- The buckets' key and the buckets ----
    // With BucketEncryptionKey=create. Its policy (docs/deploy.md, "The objects' key") delegates to
    // IAM as an account's default key policy does: who may use the key is what IAM policies grant
    // (the receivers kms:GenerateDataKey, the processor kms:Decrypt; operators what their own
    // policies grant). It names no role: the roles' policies name the key, so a key policy naming
    // the roles would be a circular dependency. And it refuses every cryptographic use but through
    // S3. Retained like the buckets: their retained objects need it.
    const key = new kms.CfnKey(this, 'ObjectsKey', {
      description: `${Aws.STACK_NAME}: objects of the payload and archive buckets`,
      enableKeyRotation: true,
      keyPolicy: {
        Version: '2012-10-17',
        Statement: [
          {
            Sid: 'EnableIamPolicies',
            Effect: 'Allow',
            Principal: { AWS: `arn:${Aws.PARTITION}:iam::${Aws.ACCOUNT_ID}:root` },
            Action: ['kms:*'],
            Resource: '*',
          },
          {
            Sid: 'DenyUseOutsideS3',
            Effect: 'Deny',
            Principal: { AWS: '*' },
            Action: ['kms:Encrypt', 'kms:Decrypt', 'kms:ReEncrypt*', 'kms:GenerateDataKey*'],
            Resource: '*',
            Condition: { StringNotEquals: { 'kms:ViaService': `s3.${Aws.REGION}.amazonaws.com` } },
          },
        ],
      },
    });
    key.overrideLogicalId('ObjectsKey');
    key.cfnOptions.condition = keyOn;
    key.cfnOptions.deletionPolicy = CfnDeletionPolicy.RETAIN;
    key.cfnOptions.updateReplacePolicy = CfnDeletionPolicy.RETAIN;
    const alias = new kms.CfnAlias(this, 'ObjectsKeyAlias', {
      aliasName: `alias/${Aws.STACK_NAME}-objects`,
      targetKeyId: key.ref,
    });
    alias.overrideLogicalId('ObjectsKeyAlias');
    alias.cfnOptions.condition = keyOn;
    const objectsKey = { arn: key.attrArn, condition: keyOn };

    // Claim checks: the body of an event too large for a message, under <provider>/…; the message
    // carries its key. Retained (like the table): messages on the queues may still reference it.
    const payloadBucket = this.privateBucket('PayloadBucket', payloadRetention, objectsKey);
    // The archive (ArchiveEnabled): every accepted request's raw body and verified metadata under
    // <provider>/<date>/…, for `webhook-ops replay`.
    const archiveBucket = this.privateBucket('ArchiveBucket', archiveRetention, objectsKey, archiveOn);
    /** The ARN of a bucket's objects under `prefix` (as the SAM template writes it). */
    const objects = (bucket: s3.Bucket, prefix: string) =>
      `arn:${Aws.PARTITION}:s3:::${bucket.bucketName}/${prefix}*`;

    // ---- The HTTP API: one route per provider, throttled at the stage ----
    const api = new apigw.HttpApi(this, 'WebhookApi', { apiName: Aws.STACK_NAME, createDefaultStage: false });
    named(api, 'WebhookApi');
    const stage = new apigw.HttpStage(this, 'WebhookApiDefaultStage', {
      httpApi: api,
      stageName: '$default',
      autoDeploy: true,
      throttle: { burstLimit: burstLimit.valueAsNumber, rateLimit: rateLimit.valueAsNumber },
    });
    named(stage, 'WebhookApiApiGatewayDefaultStage');

    // ---- Functions ----
    const common: Record<string, string> = {
      EVENTS_TABLE: table.tableName,
      EVENTS_QUEUE_URL: queue.queueUrl,
      DEDUP_TTL_SECONDS: this.params.DedupTtlSeconds.valueAsString,
      MAX_MESSAGE_BYTES: maxMessageBytes.valueAsString,
      MAX_EVENTS_PER_REQUEST: this.params.MaxEventsPerRequest.valueAsString,
      METRICS_NAMESPACE: namespace,
      PAYLOAD_BUCKET: payloadBucket.bucketName,
      // Receivers answer within this; their claim lease is twice it and their timeout (8 s) lies
      // between the two.
      REQUEST_DEADLINE_MS,
    };
    const claimActions = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:GetItem'];
    /** Table access limited to the items whose partition key starts with `<prefix>#`. */
    const ownClaims = (prefix: string) =>
      new iam.PolicyStatement({
        actions: claimActions,
        resources: [table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`${prefix}#*`] } },
      });
    const noSecret = Fn.sub('arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:none-configured');

    /** A policy of `fn`'s own under `condition` (SAM: `!If [condition, statement, !Ref AWS::NoValue]`). */
    const conditionalPolicy = (id: string, fn: lambda.IFunction, condition: CfnCondition, statement: iam.PolicyStatement) => {
      const policy = new iam.Policy(this, id, { roles: [fn.role!], statements: [statement] });
      (policy.node.defaultChild as iam.CfnPolicy).cfnOptions.condition = condition;
    };
    /** Each receiver's role, in PROVIDERS order: the processor's TRUSTED_SENDERS. */
    const senders: string[] = [];
    for (const p of PROVIDERS) {
      const environment: Record<string, string> = {
        ...common,
        ARCHIVE_BUCKET: Fn.conditionIf(archiveOn.logicalId, archiveBucket.bucketName, Aws.NO_VALUE).toString(),
        // The key every put names (x-amz-server-side-encryption: aws:kms), or "": SSE-S3.
        OBJECTS_KMS_KEY_ARN: Fn.conditionIf(keyOn.logicalId, key.attrArn, '').toString(),
      };
      for (const s of p.secrets) {
        environment[`${s.variable}_SECRET_ARN`] = this.ifConfigured(s.parameter, Aws.NO_VALUE);
      }
      for (const s of p.settings) environment[s.variable] = this.params[s.parameter].valueAsString;

      const fn = this.rustFunction(`${p.id}Webhook`, p.binary, {
        architecture: arch,
        timeout: RECEIVER_TIMEOUT,
        environment,
        reservedConcurrency: { condition: hasReceiverReserved, parameter: 'ReceiverReservedConcurrency' },
      });
      fn.addToRolePolicy(ownClaims(p.name));
      // Read only, the processor's records of its own events: a retry that finds its claim RECEIVED
      // asks whether the event reached the queue (README "Two round trips").
      fn.addToRolePolicy(
        new iam.PolicyStatement({
          actions: ['dynamodb:GetItem'],
          resources: [table.tableArn],
          conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': [`processed#${p.name}#*`] } },
        }),
      );
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage', 'sqs:GetQueueAttributes'], resources: [queue.queueArn] }));
      // A body too large for a message, under its own prefix (the message carries the key).
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [objects(payloadBucket, `${p.name}/`)] }));
      // Its own archive prefix, only when ArchiveEnabled: a policy of its own under ArchiveOn (the
      // SAM template writes the statement as `!If [ArchiveOn, …, !Ref AWS::NoValue]`).
      const archivePolicy = new iam.Policy(this, `${p.id}WebhookArchivePolicy`, {
        roles: [fn.role!],
        statements: [new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [objects(archiveBucket, `${p.name}/`)] })],
      });
      (archivePolicy.node.defaultChild as iam.CfnPolicy).cfnOptions.condition = archiveOn;
      // Puts with the stack's key (S3 asks KMS for a data key as the function), only when
      // BucketEncryptionKey=create.
      conditionalPolicy(
        `${p.id}WebhookKeyPolicy`,
        fn,
        keyOn,
        new iam.PolicyStatement({ actions: ['kms:GenerateDataKey'], resources: [key.attrArn] }),
      );
      senders.push(`${p.name}=${(fn.role as iam.Role).roleId}`);
      for (const s of p.secrets) {
        fn.addToRolePolicy(
          new iam.PolicyStatement({
            actions: ['secretsmanager:GetSecretValue'],
            resources: [this.ifConfigured(s.parameter, noSecret)],
          }),
        );
      }
      api.addRoutes({
        path: p.route,
        methods: [apigw.HttpMethod.ANY],
        integration: new HttpLambdaIntegration(`${p.id}Integration`, fn),
      });
    }

    const processor = this.rustFunction(PROCESSOR.id, PROCESSOR.binary, {
      architecture: arch,
      timeout: PROCESSOR_TIMEOUT,
      memorySize: PROCESSOR_MEMORY_MB,
      environment: {
        ...common,
        // Who may queue what (shared::trust): each receiver's role unique id, which SQS reports as the
        // part of a message's SenderId before ':'. A message claiming a provider its sender may
        // not act for is moved to the dead-letter queue, never processed.
        TRUSTED_SENDERS: Fn.join(',', senders),
        // Who may replay and redrive, for any provider.
        OPERATOR_SENDERS: Fn.join(',', operators),
        // Where it moves a refused message itself.
        DEAD_LETTER_QUEUE_URL: deadLetterQueue.queueUrl,
      },
      reservedConcurrency: { condition: hasProcessorReserved, parameter: 'ProcessorReservedConcurrency' },
    });
    processor.addToRolePolicy(ownClaims(PROCESSOR.keyPrefix));
    // Not SqsEventSource: it would also grant sqs:GetQueueUrl; these four on the one queue suffice.
    processor.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ChangeMessageVisibility'],
        resources: [queue.queueArn],
      }),
    );
    // A refused message (a sender acting for another provider) is moved to the dead-letter queue
    // by the processor itself: send there, nothing else.
    processor.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [deadLetterQueue.queueArn] }));
    // The bodies the receivers put in the payload bucket: read only.
    processor.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [objects(payloadBucket, '')] }));
    // Reads of objects put with the stack's key, only when BucketEncryptionKey=create.
    conditionalPolicy(
      'EventProcessorKeyPolicy',
      processor,
      keyOn,
      new iam.PolicyStatement({ actions: ['kms:Decrypt'], resources: [key.attrArn] }),
    );

    // ---- Bucket policies: TLS, encrypted puts, and who may read ----
    // A role session's aws:userid is "<role id>:<session>", an IAM user's "<user id>": each
    // operator id (OperatorPrincipalIds) as "<id>:*" and "<id>".
    const operatorUserIds = [Fn.join(':*,', operators), ':*,', Fn.join(',', operators)];
    const processorReads = `${(processor.role as iam.Role).roleId}:*`;
    // The payload bucket: the processor and the operators (with none, the processor only).
    this.bucketPolicy('PayloadBucket', payloadBucket, objectsKey, {
      withOperators: Fn.split(',', Fn.join('', [processorReads, ',', ...operatorUserIds])),
      withoutOperators: [processorReads],
      hasOperators,
    });
    // The archive: the operators only (the processor never reads it); with none, nobody.
    this.bucketPolicy(
      'ArchiveBucket',
      archiveBucket,
      objectsKey,
      { withOperators: Fn.split(',', Fn.join('', operatorUserIds)), hasOperators },
      archiveOn,
    );
    const mapping = new lambda.EventSourceMapping(this, 'EventProcessorEventSource', {
      target: processor,
      eventSourceArn: queue.queueArn,
      batchSize: 10,
      maxBatchingWindow: Duration.seconds(1),
      reportBatchItemFailures: true,
      maxConcurrency: maxConcurrency.valueAsNumber,
    });
    named(mapping, 'EventProcessorEventSource');

    // ---- Metrics and alarms ----
    const custom = (metricName: string, provider: string, statistic = 'Sum') =>
      new cloudwatch.Metric({ namespace, metricName, dimensionsMap: { Provider: provider }, statistic, period: ALARM_PERIOD });
    /** SUM over the providers of one custom metric, each FILLed with 0. */
    const perProvider = (metricName: string) => ({
      expression: `SUM([${PROVIDERS.map((p) => `FILL(${p.name}, 0)`).join(', ')}])`,
      usingMetrics: Object.fromEntries(PROVIDERS.map((p) => [p.name, custom(metricName, p.name)])),
    });
    /** The alarm under its construct ID as logical ID, notifying AlarmTopicArn when it is set. */
    const notify = (alarm: cloudwatch.Alarm) => {
      named(alarm, alarm.node.id);
      const cfn = alarm.node.defaultChild as cloudwatch.CfnAlarm;
      const actions = Token.asList(Fn.conditionIf(hasAlarmTopic.logicalId, [alarmTopic.valueAsString], Aws.NO_VALUE));
      cfn.alarmActions = actions;
      cfn.okActions = actions;
      return alarm;
    };
    const alarmDefaults = {
      evaluationPeriods: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    };

    // Alarms: each one's runbook is in docs/runbook.md, under the alarm's logical name.
    notify(
      new cloudwatch.Alarm(this, 'DeadLetterAlarm', {
        ...alarmDefaults,
        alarmDescription: 'Events reached the dead-letter queue; inspect and redrive them (docs/runbook.md).',
        metric: deadLetterQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(1) }),
        threshold: 0,
      }),
    );
    notify(
      new cloudwatch.Alarm(this, 'OldestMessageAgeAlarm', {
        ...alarmDefaults,
        alarmDescription: 'The processor is not keeping up or is failing; events wait on the queue (docs/runbook.md).',
        metric: queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period: ALARM_PERIOD }),
        threshold: oldestAgeSeconds.valueAsNumber,
      }),
    );
    // Not SQS's ApproximateAgeOfOldestMessage: a standard queue's metric stops seeing a message
    // after its third receive. The processor reports the age of each record that failed, when it
    // fails: once per wait (up to 66 minutes), so the alarm looks at the last two hours (any one
    // datapoint over the threshold) and stays in ALARM between receives instead of flapping.
    notify(
      new cloudwatch.Alarm(this, 'RetryHorizonAlarm', {
        ...alarmDefaults,
        evaluationPeriods: 24,
        datapointsToAlarm: 1,
        alarmDescription:
          'Events have been failing for three quarters of RetryHorizonHours; past the horizon they reach the dead-letter queue (docs/runbook.md).',
        metric: new cloudwatch.Metric({
          namespace,
          metricName: 'FailingMessageAge',
          statistic: 'Maximum',
          period: ALARM_PERIOD,
        }),
        threshold: fromRetryHorizon('AlarmAgeMilliseconds'),
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      }),
    );
    const apiErrors = api.metricServerError({ statistic: 'Sum', period: ALARM_PERIOD });
    const apiRequests = api.metricCount({ statistic: 'Sum', period: ALARM_PERIOD });
    notify(
      new cloudwatch.Alarm(this, 'ReceiverServerErrorAlarm', {
        ...alarmDefaults,
        alarmDescription:
          'Webhook requests answered 5xx (storage, queue or function failures); providers are retrying (docs/runbook.md).',
        metric: new cloudwatch.MathExpression({
          expression: 'IF(requests > 0, 100 * errors / requests, 0)',
          label: '5xx percent',
          usingMetrics: { errors: apiErrors, requests: apiRequests },
          period: ALARM_PERIOD,
        }),
        threshold: errorRatePercent.valueAsNumber,
      }),
    );
    for (const p of PROVIDERS) {
      notify(
        new cloudwatch.Alarm(this, `${p.id}UnauthorizedAlarm`, {
          ...alarmDefaults,
          alarmDescription: `Many ${p.name} requests refused with 401 - someone probing the URL, or a rotated secret not deployed (docs/runbook.md).`,
          metric: custom('Unauthorized', p.name),
          threshold: unauthorizedThreshold.valueAsNumber,
        }),
      );
    }
    const conflicts = perProvider('Conflict');
    notify(
      new cloudwatch.Alarm(this, 'ConflictAlarm', {
        ...alarmDefaults,
        alarmDescription:
          'Events answered in flight or conflicting - stuck claims or a provider reusing ids (docs/runbook.md).',
        metric: new cloudwatch.MathExpression({ ...conflicts, period: ALARM_PERIOD }),
        threshold: conflictThreshold.valueAsNumber,
      }),
    );
    const failed = perProvider('Failed');
    notify(
      new cloudwatch.Alarm(this, 'ProcessorFailureAlarm', {
        ...alarmDefaults,
        alarmDescription:
          'The processor failed invocations or business handlers; messages will be retried, then dead-lettered (docs/runbook.md).',
        metric: new cloudwatch.MathExpression({
          expression: `FILL(errors, 0) + ${failed.expression}`,
          usingMetrics: {
            errors: processor.metricErrors({ statistic: 'Sum', period: ALARM_PERIOD }),
            ...failed.usingMetrics,
          },
          period: ALARM_PERIOD,
        }),
        threshold: 0,
      }),
    );
    // One per refused message (the processor's `Refused`, no dimensions: the provider a message
    // claims is what is in doubt). Any is worth a look.
    const refused = (label?: string) =>
      new cloudwatch.Metric({ namespace, metricName: 'Refused', statistic: 'Sum', period: ALARM_PERIOD, label });
    notify(
      new cloudwatch.Alarm(this, 'RefusedMessageAlarm', {
        ...alarmDefaults,
        alarmDescription:
          'The processor refused a message - its sender may not act for the provider it claims - and moved it to the dead-letter queue unprocessed (docs/runbook.md).',
        metric: refused(),
        threshold: 0,
      }),
    );

    // ---- Dashboard ----
    // One line per provider (and reason): an empty label lets CloudWatch name each series.
    const search = (metricName: string, statistic: string, dimensions = 'Provider') =>
      new cloudwatch.SearchExpression({
        expression: `SEARCH('{${namespace},${dimensions}} MetricName="${metricName}"', '${statistic}', 300)`,
        label: '',
        period: ALARM_PERIOD,
      });
    const graph = (title: string, left: cloudwatch.IMetric[]) =>
      new cloudwatch.GraphWidget({ title, left, width: 12, height: 6, period: ALARM_PERIOD, stacked: false });
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `${Aws.STACK_NAME}-webhooks` });
    named(dashboard, 'Dashboard');
    dashboard.addWidgets(
      graph('Accepted events by provider', [search('Accepted', 'Sum')]),
      graph('Duplicates and conflicts', [search('Duplicate', 'Sum'), search('Conflict', 'Sum')]),
    );
    dashboard.addWidgets(
      graph('Unauthorized and bad requests', [search('Unauthorized', 'Sum'), search('BadRequest', 'Sum')]),
      graph('Unavailable (5xx) by reason', [search('Unavailable', 'Sum', 'Provider,Reason')]),
    );
    dashboard.addWidgets(
      graph('Handshakes', [search('Handshake', 'Sum')]),
      graph('Claim and send latency p99 (ms)', [search('ClaimLatency', 'p99'), search('SendLatency', 'p99')]),
    );
    dashboard.addWidgets(
      graph('Processor: processed, failed, rejected, refused', [
        search('Processed', 'Sum'),
        search('Failed', 'Sum'),
        search('Rejected', 'Sum'),
        refused('refused (every provider)'),
      ]),
      graph('Processor: handler latency p99 and message age max (ms)', [
        search('HandlerLatency', 'p99'),
        search('MessageAge', 'Maximum'),
      ]),
    );
    const minute = { statistic: 'Maximum', period: Duration.minutes(1) };
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Queues',
        width: 12,
        height: 6,
        period: Duration.minutes(1),
        statistic: 'Maximum',
        left: [
          queue.metricApproximateNumberOfMessagesVisible({ ...minute, label: 'events queue' }),
          deadLetterQueue.metricApproximateNumberOfMessagesVisible({ ...minute, label: 'dead-letter queue' }),
        ],
        right: [queue.metricApproximateAgeOfOldestMessage({ ...minute, label: 'oldest message age (s)' })],
      }),
      new cloudwatch.GraphWidget({
        title: 'HTTP API',
        width: 12,
        height: 6,
        period: ALARM_PERIOD,
        statistic: 'Sum',
        left: [apiRequests, api.metricClientError({ statistic: 'Sum', period: ALARM_PERIOD }), apiErrors],
      }),
    );

    // ---- Outputs ----
    const baseUrl = `https://${api.apiId}.execute-api.${Aws.REGION}.${Aws.URL_SUFFIX}`;
    new CfnOutput(this, 'ApiUrl', { description: 'Base URL of the webhook API', value: baseUrl });
    for (const p of PROVIDERS) {
      // A URL-token provider's route ends in a path parameter: the token, which the user appends.
      const token = /\{[A-Za-z]+\+?\}/;
      new CfnOutput(this, `${p.id}WebhookUrl`, {
        description: token.test(p.route)
          ? `Append your ${p.secrets[0].variable}, then paste into ${p.pasteInto}`
          : `Paste into ${p.pasteInto}`,
        value: baseUrl + p.route.replace(token, '<token>'),
      });
    }
    new CfnOutput(this, 'EventsTableName', { value: table.tableName });
    new CfnOutput(this, 'EventsQueueUrl', { value: queue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', { value: deadLetterQueue.queueUrl });
    new CfnOutput(this, 'DashboardName', { value: dashboard.dashboardName });
    new CfnOutput(this, 'PayloadBucketName', {
      description: 'Bodies of events too large for a message, expired after PayloadRetentionDays',
      value: payloadBucket.bucketName,
    });
    new CfnOutput(this, 'ArchiveBucketName', {
      description: 'Archived requests, for webhook-ops replay (ArchiveEnabled)',
      value: archiveBucket.bucketName,
      condition: archiveOn,
    });
    new CfnOutput(this, 'ObjectsKeyArn', {
      description:
        "The buckets' KMS key (BucketEncryptionKey=create); webhook-ops replay needs it as OBJECTS_KMS_KEY_ARN",
      value: objectsKey.arn,
      condition: keyOn,
    });
  }

  private param(name: string, props: {
    type: string;
    default?: string | number;
    allowedValues?: string[];
    allowedPattern?: string;
    minValue?: number;
    maxValue?: number;
    description?: string;
  }): CfnParameter {
    const p = new CfnParameter(this, name, props);
    this.params[name] = p;
    return p;
  }

  /**
   * A bucket `<id>` (logical ID as in the SAM template) that is private, encrypted (SSE-S3, or
   * SSE-KMS with `key` and a bucket key under its condition) and retained, whose objects expire
   * after `retention` days; under `condition` when given. Its policy: `bucketPolicy`.
   */
  private privateBucket(id: string, retention: CfnParameter, key: ObjectsKey, condition?: CfnCondition): s3.Bucket {
    const bucket = new s3.Bucket(this, id, {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      lifecycleRules: [
        {
          id: 'expire',
          expiration: Duration.days(retention.valueAsNumber),
          abortIncompleteMultipartUploadAfter: Duration.days(1),
        },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const cfnBucket = named(bucket, id);
    // SSE-S3, or SSE-KMS with the stack's key and a bucket key, which spares a KMS request per
    // object (the construct's `encryption` cannot be conditional).
    cfnBucket.addPropertyOverride('BucketEncryption.ServerSideEncryptionConfiguration', [
      Fn.conditionIf(
        key.condition.logicalId,
        { ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: key.arn }, BucketKeyEnabled: true },
        { ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } },
      ),
    ]);
    if (condition) cfnBucket.cfnOptions.condition = condition;
    return bucket;
  }

  /**
   * The policy `<id>Policy` of bucket `<id>`: no request without TLS; no put without the
   * encryption the code sends on every put (`x-amz-server-side-encryption: AES256`, or `aws:kms`
   * naming `key` under its condition); no object read (GetObject, GetObjectVersion) by anyone
   * whose aws:userid is not in `readers.withOperators` (under `readers.hasOperators`) or
   * `readers.withoutOperators` (otherwise; none given = nobody reads), whatever their IAM policies
   * grant. The account's root user can still change this policy, as any bucket policy. Under
   * `condition` when given.
   */
  private bucketPolicy(
    id: string,
    bucket: s3.Bucket,
    key: ObjectsKey,
    readers: { withOperators: string[]; withoutOperators?: string[]; hasOperators: CfnCondition },
    condition?: CfnCondition,
  ): void {
    const objects = `${bucket.bucketArn}/*`;
    const deny = (sid: string, actions: string[], resource: string | string[], when?: Record<string, unknown>) => ({
      Sid: sid,
      Effect: 'Deny',
      Principal: '*',
      Action: actions,
      Resource: resource,
      ...(when ? { Condition: when } : {}),
    });
    const encryption = (algorithm: string) =>
      deny('DenyUnencryptedPuts', ['s3:PutObject'], objects, {
        StringNotEquals: { 's3:x-amz-server-side-encryption': algorithm },
      });
    const reads = (userIds?: string[]) =>
      deny(
        'DenyReadsByOthers',
        ['s3:GetObject', 's3:GetObjectVersion'],
        objects,
        userIds ? { StringNotLike: { 'aws:userid': userIds } } : undefined,
      );
    const policy = new s3.CfnBucketPolicy(this, `${id}Policy`, {
      bucket: bucket.bucketName,
      policyDocument: {
        Version: '2012-10-17',
        Statement: [
          deny('DenyInsecureTransport', ['s3:*'], [bucket.bucketArn, objects], { Bool: { 'aws:SecureTransport': 'false' } }),
          Fn.conditionIf(key.condition.logicalId, encryption('aws:kms'), encryption('AES256')),
          // A statement of its own: two keys in one StringNotEquals deny only when both differ.
          Fn.conditionIf(
            key.condition.logicalId,
            deny('DenyOtherKeys', ['s3:PutObject'], objects, {
              StringNotEquals: { 's3:x-amz-server-side-encryption-aws-kms-key-id': key.arn },
            }),
            Aws.NO_VALUE,
          ),
          Fn.conditionIf(readers.hasOperators.logicalId, reads(readers.withOperators), reads(readers.withoutOperators)),
        ],
      },
    });
    policy.overrideLogicalId(`${id}Policy`);
    if (condition) policy.cfnOptions.condition = condition;
  }

  /** Condition `<id>`: parameter `<parameter>` is not empty. */
  private notEmpty(id: string, parameter: string): CfnCondition {
    return new CfnCondition(this, id, {
      expression: Fn.conditionNot(Fn.conditionEquals(this.params[parameter].valueAsString, '')),
    });
  }

  /** The secret parameter's value when set (condition `Has<parameter>`), else `otherwise`. */
  private ifConfigured(parameter: string, otherwise: string): string {
    return Fn.conditionIf(`Has${parameter}`, this.params[parameter].valueAsString, otherwise).toString();
  }

  /**
   * A RustFunction named `<id>Function` (logical ID as in the SAM template) built from the
   * workspace binary `binary`, with its own log group `<id>LogGroup`.
   */
  private rustFunction(
    id: string,
    binary: string,
    o: {
      architecture: LambdaArchitecture;
      timeout: Duration;
      memorySize?: number;
      environment: Record<string, string>;
      reservedConcurrency: { condition: CfnCondition; parameter: string };
    },
  ): lambda.Function {
    const prefix = id.replace(/Webhook$/, '');
    const logGroup = new logs.LogGroup(this, `${prefix}LogGroup`, {
      // Not Lambda's default `/aws/lambda/<function>`: a stack deployed before it had log groups
      // already has those (Lambda made them), and creating them again would fail the update.
      logGroupName: `/webhooks/${Aws.STACK_NAME}/${binary}`,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const cfnLogGroup = named(logGroup, `${prefix}LogGroup`) as logs.CfnLogGroup;
    // A parameter, not a RetentionDays constant (its AllowedValues are the valid retentions).
    cfnLogGroup.retentionInDays = this.params.LogRetentionDays.valueAsNumber;

    const fn = new RustFunction(this, `${id}Function`, {
      manifestPath: WORKSPACE_MANIFEST,
      binaryName: binary,
      runtime: 'provided.al2023',
      architecture: o.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
      functionName: `${Aws.STACK_NAME}-${binary}`,
      memorySize: o.memorySize ?? MEMORY_MB,
      timeout: o.timeout,
      environment: o.environment,
      logGroup,
      loggingFormat: lambda.LoggingFormat.TEXT,
    });
    const cfn = named(fn, `${id}Function`) as lambda.CfnFunction;
    // The value the rule pins to the built architecture, as in the SAM template.
    cfn.architectures = [this.params.Architecture.valueAsString];
    cfn.reservedConcurrentExecutions = Token.asNumber(
      Fn.conditionIf(
        o.reservedConcurrency.condition.logicalId,
        this.params[o.reservedConcurrency.parameter].valueAsString,
        Aws.NO_VALUE,
      ),
    );
    // What SAM's `sam build` reads; the comparison with the SAM template reads it too.
    cfn.addMetadata('BuildMethod', 'rust-cargolambda');
    cfn.addMetadata('BuildProperties', { Binary: binary });
    return fn;
  }
}

/** Give a construct's resource the SAM template's logical ID. */
function named(construct: Construct, logicalId: string): CfnResource {
  const resource = construct.node.defaultChild as CfnResource;
  (resource as CfnElement).overrideLogicalId(logicalId);
  return resource;
}

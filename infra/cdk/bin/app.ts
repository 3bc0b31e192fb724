#!/usr/bin/env node
import { App } from 'aws-cdk-lib';
import { LambdaArchitecture, WebhookIntakeStack } from '../lib/webhook-stack';
import { applyBundlingContext } from '../lib/bundling';

const app = new App();

const architecture = (app.node.tryGetContext('architecture') ?? 'arm64') as string;
if (architecture !== 'arm64' && architecture !== 'x86_64') {
  throw new Error(`context "architecture" must be arm64 or x86_64, not ${JSON.stringify(architecture)}`);
}
applyBundlingContext(app);

new WebhookIntakeStack(app, 'WebhookIntake', {
  stackName: app.node.tryGetContext('stackName') ?? 'webhook-intake',
  description:
    'Webhook intake: one receiver Lambda per provider behind an HTTP API, a DynamoDB claim table, an SQS queue with a dead-letter queue, and the event-processor consumer (CDK; the same stack as infra/template.yaml).',
  architecture: architecture as LambdaArchitecture,
  analyticsReporting: false,
});

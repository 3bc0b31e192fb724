/**
 * The one list the stack is generated from: one receiver Lambda per provider.
 *
 * Everything per provider in the stack (function, log group, route, IAM statements, secret
 * parameters and their conditions, the Unauthorized alarm, the alarms' per-provider metrics)
 * comes from here. Adding a provider is one entry (plus its crate in functions/).
 */

/** A credential read from Secrets Manager: the function gets `<variable>_SECRET_ARN`. */
export interface SecretSetting {
  /** The variable the receiver reads, e.g. TRYBE_SIGNING_SECRET. */
  readonly variable: string;
  /** CloudFormation parameter holding the secret's ARN ("" = not configured). */
  readonly parameter: string;
  /** What the secret holds, when more than the variable's name says. */
  readonly holds?: string;
}

/** A plain (non-secret) setting passed as an environment variable from a parameter. */
export interface PlainSetting {
  readonly variable: string;
  /** CloudFormation parameter (a String, "" by default). */
  readonly parameter: string;
  readonly allowedPattern?: string;
  readonly description?: string;
}

export interface Provider {
  /** Lower-case name: claim key prefix (`<name>#…`), metric dimension `Provider`, URL path. */
  readonly name: string;
  /** Prefix of the logical IDs (`<id>WebhookFunction`, `<id>LogGroup`, …), as in the SAM template. */
  readonly id: string;
  /** The cargo binary (functions/<binary>). */
  readonly binary: string;
  /** HTTP API route path; providers authenticated by a URL token take a greedy `{token+}`. */
  readonly route: string;
  /** Where the URL goes (the stack's outputs say so). */
  readonly pasteInto: string;
  readonly secrets: readonly SecretSetting[];
  readonly settings: readonly PlainSetting[];
}

/** Same order as the alarms' metric math in infra/template.yaml. */
export const PROVIDERS: readonly Provider[] = [
  {
    name: 'trybe',
    id: 'Trybe',
    binary: 'trybe-webhook',
    route: '/trybe',
    pasteInto: "Trybe's webhook settings",
    secrets: [{ variable: 'TRYBE_SIGNING_SECRET', parameter: 'TrybeSigningSecretArn' }],
    settings: [],
  },
  {
    name: 'tribe',
    id: 'Tribe',
    binary: 'tribe-webhook',
    route: '/tribe',
    pasteInto: "Tribe's app webhook settings",
    secrets: [{ variable: 'TRIBE_SIGNING_SECRET', parameter: 'TribeSigningSecretArn' }],
    settings: [
      {
        variable: 'TRIBE_TOLERANCE_SECONDS',
        parameter: 'TribeToleranceSeconds',
        allowedPattern: '^[0-9]*$',
        description: 'TRIBE_TOLERANCE_SECONDS, the accepted age of a signed request ("" = the code\'s default).',
      },
    ],
  },
  {
    name: 'tribemade',
    id: 'TribeMade',
    binary: 'tribemade-webhook',
    route: '/tribemade/{token+}',
    pasteInto: "TribeMade's webhook settings",
    secrets: [{ variable: 'TRIBEMADE_URL_TOKEN', parameter: 'TribemadeUrlTokenArn' }],
    settings: [{ variable: 'TRIBEMADE_STORE_IDS', parameter: 'TribemadeStoreIds' }],
  },
  {
    name: 'trifft',
    id: 'Trifft',
    binary: 'trifft-webhook',
    route: '/trifft',
    pasteInto: "TRIFFT's webhook settings",
    secrets: [
      { variable: 'TRIFFT_AUTH_VALUE', parameter: 'TrifftAuthValueArn' },
      { variable: 'TRIFFT_BASIC_PASSWORD', parameter: 'TrifftBasicPasswordArn' },
      { variable: 'TRIFFT_BASIC_USER', parameter: 'TrifftBasicUserArn', holds: 'a user name, or a tenant map of them' },
    ],
    settings: [
      { variable: 'TRIFFT_AUTH_HEADER', parameter: 'TrifftAuthHeader' },
      {
        variable: 'TRIFFT_EVENT_ID_HEADER',
        parameter: 'TrifftEventIdHeader',
        description: 'TRIFFT_EVENT_ID_HEADER, a header carrying the event id ("" = none; see README).',
      },
      {
        variable: 'TRIFFT_EVENT_ID_POINTER',
        parameter: 'TrifftEventIdPointer',
        description: 'TRIFFT_EVENT_ID_POINTER, a JSON pointer to the event id in the body ("" = none).',
      },
      {
        variable: 'TRIFFT_EVENT_TYPE_HEADER',
        parameter: 'TrifftEventTypeHeader',
        description: 'TRIFFT_EVENT_TYPE_HEADER ("" = none).',
      },
      {
        variable: 'TRIFFT_EVENT_TYPE_POINTER',
        parameter: 'TrifftEventTypePointer',
        description: 'TRIFFT_EVENT_TYPE_POINTER ("" = none).',
      },
    ],
  },
  {
    name: 'tilby',
    id: 'Tilby',
    binary: 'tilby-webhook',
    route: '/tilby/{token+}',
    pasteInto: "Tilby's webhook settings",
    secrets: [
      { variable: 'TILBY_URL_TOKEN', parameter: 'TilbyUrlTokenArn' },
      { variable: 'TILBY_SIGNING_TOKEN', parameter: 'TilbySigningTokenArn' },
    ],
    settings: [
      { variable: 'TILBY_SIGNATURE_HEADER', parameter: 'TilbySignatureHeader' },
      { variable: 'TILBY_ENVIRONMENT_IDS', parameter: 'TilbyEnvironmentIds' },
    ],
  },
  {
    name: 'standard',
    id: 'Standard',
    binary: 'standard-webhook',
    route: '/standard',
    pasteInto: "the sender's Standard Webhooks (or Svix) endpoint settings",
    secrets: [{ variable: 'STANDARD_WEBHOOK_SECRET', parameter: 'StandardWebhookSecretArn', holds: 'whsec_ secrets, comma-separated, or a tenant map' }],
    settings: [
      {
        variable: 'STANDARD_WEBHOOK_TOLERANCE_SECONDS',
        parameter: 'StandardWebhookToleranceSeconds',
        allowedPattern: '^[0-9]*$',
        description: 'STANDARD_WEBHOOK_TOLERANCE_SECONDS, the accepted age of a signed request, either way ("" = the code\'s default, 300).',
      },
    ],
  },
];

/** The consumer: reads the queue, claims `processed#<dedup key>`. */
export const PROCESSOR = {
  id: 'EventProcessor',
  binary: 'event-processor',
  /** Its claim keys: `processed#<dedup key>`. */
  keyPrefix: 'processed',
} as const;

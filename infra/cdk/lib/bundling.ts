import { App } from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';

/**
 * `-c bundling=false`: synthesize without building anything (offline, no cargo, no Docker).
 *
 * The CDK skips an asset's bundling for the stacks not listed in the context
 * `aws:cdk:bundling-stacks`, but the CLI refuses `-c aws:…` keys from the command line and sets
 * that key itself (to every stack for synth, diff and deploy). So the app sets it, before any
 * stack exists: with an empty list RustFunction never runs `cargo lambda build`, and its code
 * asset points at the (unbuilt) workspace. Such an assembly is for reading, comparing and linting
 * only: deploy without this flag.
 *
 * cargo-lambda-cdk (0.0.36) also probes `cargo lambda --version` in RustFunction's constructor to
 * choose between local and Docker bundling, whether or not bundling happens. With bundling off
 * that choice is moot, so it is answered here and no cargo process starts at all.
 */
export function applyBundlingContext(app: App): boolean {
  const flag: unknown = app.node.tryGetContext('bundling');
  const bundling = !(flag === false || flag === 'false');
  if (!bundling) {
    app.node.setContext(cxapi.BUNDLING_STACKS, []);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Bundling } = require('cargo-lambda-cdk/lib/bundling') as { Bundling: { runsLocally?: boolean } };
    Bundling.runsLocally = true;
  }
  return bundling;
}

#!/usr/bin/env python3
"""Protocol mutations against the delivery simulation: each weakens one clause of the protocol,
builds the simulation, runs the `make test` budget of seeds and reports the first seed that
caught it (or that none did). The source is restored after each, whatever happens.

    tools/delivery-sim/mutations.py [--seeds N] [name ...]
"""
import argparse
import pathlib
import re
import signal
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
STORE = "shared/src/store/mod.rs"
MEMORY = "shared/src/store/memory.rs"
PIPELINE = "shared/src/pipeline"
CLAIM = PIPELINE + "/claim.rs"
SEND = PIPELINE + "/send.rs"
DELIVER = PIPELINE + "/deliver.rs"
ADMIT = PIPELINE + "/admit.rs"
CONSUMER = "shared/src/consumer.rs"
TRUST = "shared/src/trust.rs"
SIM_AWS = "tools/delivery-sim/src/aws.rs"

# name: (what it breaks, [(file, old, new), ...])
MUTATIONS = {
    "lease-clause": ("no takeover of a lapsed lease (LeaseLapsed dropped from the claim condition)",
        [(STORE, "    Clause::Expired,\n    Clause::LeaseLapsed,\n];", "    Clause::Expired,\n];")]),
    "lease-ignored": ("a live lease taken over as if lapsed",
        [(STORE, "r.status == claim.pending && r.lease_until_ms < now_ms", "r.status == claim.pending")]),
    "expiry-clause": ("no claim after the horizon (Expired dropped from the claim condition)",
        [(STORE, "    Clause::OwnToken,\n    Clause::Expired,\n", "    Clause::OwnToken,\n")]),
    "token-guard-release": ("release deletes a claim that is no longer ours",
        [(MEMORY, "if records.get(pk).is_some_and(|r| r.token == token) {", "if records.get(pk).is_some() {")]),
    "token-guard-finish": ("finish marks a claim that is no longer ours",
        [(MEMORY, "if let Some(r) = records.get_mut(pk).filter(|r| r.token == token) {", "if let Some(r) = records.get_mut(pk) {")]),
    "release-on-send-failure": ("a failed send keeps its claim until the lease ends",
        [(CLAIM, "            self.release(unsent).await;\n", "            drop(unsent);\n")]),
    "release-on-claim-failure": ("a failed claim write keeps what it may have taken",
        [(CLAIM, "            self.release(super::cleanup::maybe_ours(prepared)).await;\n", "            let _ = super::cleanup::maybe_ours(prepared);\n")]),
    "first-horizon": ("a takeover's ENQUEUED mark keeps the takeover's fresh horizon",
        [(DELIVER, "                    first: Some(s.first),\n", "                    first: {\n                        let _ = s.first;\n                        None\n                    },\n")]),
    "horizon-cap": ("a takeover's ENQUEUED mark may outlive the processor's record",
        [(CLAIM, "first.expires_at = first.expires_at.min(processed.expires_at);", "let _ = processed.expires_at;")]),
    "received-counts-as-reached": ("the receiver's own RECEIVED claim read as the processor's record",
        [(CLAIM, ".record(&crate::keys::processed_key(&p.claim.pk))", ".record(&p.claim.pk)")]),
    "expired-record-reached": ("an expired processor record taken as present",
        [(CLAIM, "Ok(found) => found.filter(|r| r.expires_at >= p.claim.now.unix_timestamp()),", "Ok(found) => found,")]),
    "mark-after-503": ("the events a 503 queued marked ENQUEUED with the request's fresh horizon",
        [(DELIVER, "        let Attempt { result, progress } = attempt.archived(archived);\n",
          "        let Attempt { result, progress } = attempt.archived(archived);\n        if result.is_err() {\n            let sent: Vec<_> = prepared.iter().filter(|p| p.is(ClaimState::Sent)).map(|p| (p, Finish::Enqueued { message_id: None, first: None })).collect();\n            self.mark(sent, inbound.now).await;\n        }\n")]),
    "deadline-mark": ("the deadline path marks what it sent ENQUEUED without the first horizon",
        [(DELIVER, "        let cleanup = self.release(super::cleanup::maybe_ours(prepared));\n",
          "        let sent: Vec<_> = prepared.iter().filter(|p| p.is(ClaimState::Sent)).map(|p| (p, Finish::Enqueued { message_id: None, first: None })).collect();\n        let cleanup = futures::future::join(self.release(super::cleanup::maybe_ours(prepared)), self.mark(sent, prepared[0].claim.now));\n")]),
    "processor-runs-duplicates": ("the processor runs an event its record says is done",
        [(CONSUMER, "                return Ok(RecordOutcome::AlreadyProcessed);", "                let _ = RecordOutcome::AlreadyProcessed;")]),
    "processor-no-release": ("the processor keeps its claim after a failed handler",
        [(CONSUMER, "if let Err(release) = self.claims.release(&claim.pk, &claim.token).await {", "if let Err(release) = Ok::<(), crate::store::StoreError>(()) {")]),
    "ack-unsent": ("a failed send answered 200",
        [(CLAIM, "        if !unsent.is_empty() {\n            self.release(unsent).await;", "        if false && !unsent.is_empty() {\n            self.release(unsent).await;")]),
    "tenant-check": ("an event accepted under another tenant's credential",
        [(ADMIT, ".find(|e| !verified.proof().permits(e.tenant.as_deref()))", ".find(|_| false)")]),
    "trust-sender": ("any sender may act for any provider (the SenderId check dropped)",
        [(TRUST, "if !operator && !receivers.contains(who) {", "if false && !operator && !receivers.contains(who) {")]),
    "trust-foreign-key": ("a dedup key of another provider accepted",
        [(TRUST, "            return Err(Refusal::ForeignKey(provider.to_owned()));", "            let _ = Refusal::ForeignKey(provider.to_owned());")]),
    "trust-replay": ("a replay mark honoured from any sender",
        [(TRUST, "if envelope.replay.is_some() && !operator {", "if false && envelope.replay.is_some() && !operator {")]),
    "redrive-refused": ("the operator's redrive moves refused messages back (as an operator)",
        [(SIM_AWS, ".partition(|q| q.refused.is_some());", ".partition(|_| false);")]),
    "no-backoff": ("a failed record is not hidden: it comes back after the queue's visibility timeout",
        [(CONSUMER, "visibility.hide(&entries).await", "{ let _ = (visibility, &entries); Vec::new() }")]),
    "flat-backoff": ("a failed record waits the first wait every time (no growth with its receive count)",
        [(CONSUMER, "backoff.delay_for(message_id, receives(record))", "backoff.delay_for(message_id, 1)")]),
}
MUTATIONS["processor-no-finish"] = ("the processor never marks PROCESSED",
    [(CONSUMER, "            .finish(\n                &claim.pk,\n                &claim.token,\n                &Finish::Processed,\n                self.clock.now(),\n            )",
      "            .release(\n                \"no-such-claim\",\n                &claim.token,\n            )")])


def run(cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def main():
    # A killed run still restores the source (the finally blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3000)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    names = args.names or list(MUTATIONS)
    results = []
    for name in names:
        what, edits = MUTATIONS[name]
        originals = {}
        try:
            for path, old, new in edits:
                f = ROOT / path
                text = originals.setdefault(path, f.read_text())
                current = f.read_text()
                if current.count(old) != 1:
                    raise SystemExit(f"{name}: the text to mutate is not found once in {path}")
                f.write_text(current.replace(old, new))
            build = run(["cargo", "build", "--quiet", "--profile", "sim", "-p", "delivery-sim"])
            if build.returncode != 0:
                results.append((name, what, "does not build: " + build.stderr[-400:]))
                continue
            out = run(["target/sim/delivery-sim", "--seeds", str(args.seeds), "--first-failure"])
            m = re.search(r"first failing seed: (\d+) \((\d+) seeds run\)", out.stdout)
            inv = re.search(r"FAILED:\n  ([^:]+):", out.stdout)
            if m:
                verdict = f"caught at seed {m.group(1)} ({m.group(2)} seeds): {inv.group(1) if inv else '?'}"
            else:
                verdict = f"NOT caught in {args.seeds} seeds"
            results.append((name, what, verdict))
        finally:
            for path, text in originals.items():
                (ROOT / path).write_text(text)
        print(f"{name}: {results[-1][2]}", flush=True)
    print("\n| mutation | what it breaks | result |\n|---|---|---|")
    for name, what, verdict in results:
        print(f"| {name} | {what} | {verdict} |")


if __name__ == "__main__":
    sys.exit(main())

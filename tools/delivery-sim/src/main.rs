//! `make sim`: runs seeds of the delivery simulation and reports what they covered.
//!
//! ```text
//! delivery-sim --seconds 600          # as many seeds as fit in 10 minutes
//! delivery-sim --seeds 500 --from 1   # seeds 1..=500
//! delivery-sim --seed 42 --trace      # one seed, with the trace of every step
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Deterministic simulation of the whole delivery")]
struct Args {
    /// Run this one seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run this many seeds, starting at --from.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Run seeds for this long (wall clock), starting at --from.
    #[arg(long)]
    seconds: Option<u64>,
    /// Print every step of the run (with --seed).
    #[arg(long)]
    trace: bool,
    /// Leave out the bursts of different TRIFFT GETs at one instant (on by default), to replay a
    /// seed as it ran before they were added.
    #[arg(long)]
    without_trifft_get_bursts: bool,
    /// Stop at the first seed that violates an invariant (mutation runs: how many seeds it took).
    #[arg(long)]
    first_failure: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let cpu_started = cpu_time();
    let mut totals = Totals::default();
    let deadline = args.seconds.map(|s| started + Duration::from_secs(s));
    let mut seed = args.seed.unwrap_or(args.from);
    let last = match (args.seed, args.seeds) {
        (Some(s), _) => Some(s),
        (None, Some(n)) => Some(args.from + n.saturating_sub(1)),
        (None, None) if deadline.is_none() => Some(args.from + 99),
        _ => None,
    };
    loop {
        if last.is_some_and(|l| seed > l) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let report = run(
            seed,
            args.trace && args.seed.is_some(),
            !args.without_trifft_get_bursts,
        );
        if args.seed.is_some() {
            println!("{report:#?}");
        }
        totals.add(&report);
        if !report.violations.is_empty() {
            print_failure(seed, !args.without_trifft_get_bursts);
            if args.first_failure {
                println!("first failing seed: {seed} ({} seeds run)", totals.seeds);
                break;
            }
        }
        seed += 1;
    }
    let cpu = cpu_time() - cpu_started;
    println!(
        "seeds {} (from {}), simulated deliveries {}, processor invocations {}, handler runs {}, simulated days {:.0}, \
         faults {}, crashes {}, TTL deletions {}, DLQ moves {}, rogue messages refused {}, excused second runs {}, \
         downstream outages {} within the retry horizon (longest {:.1} h; DLQ moves in them {}; last event run {:.0} min after its outage ended, at most), \
         {} past it (DLQ moves {}, all redriven and run), violations {}; \
         {:.1} s wall, {:.1} s CPU, {:.0} deliveries per CPU-minute",
        totals.seeds,
        args.seed.unwrap_or(args.from),
        totals.deliveries,
        totals.invocations,
        totals.runs,
        totals.simulated.as_secs_f64() / 86_400.0,
        totals.faults,
        totals.crashes,
        totals.ttl_deletes,
        totals.dlq_moves,
        totals.refused,
        totals.excused,
        totals.outages,
        totals.longest_outage.as_secs_f64() / 3600.0,
        totals.outage_dlq_moves,
        totals.outage_drain.as_secs_f64() / 60.0,
        totals.long_outages,
        totals.long_outage_dlq_moves,
        totals.violations,
        started.elapsed().as_secs_f64(),
        cpu,
        totals.deliveries as f64 / (cpu / 60.0).max(1e-9),
    );
    if totals.violations > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A failing seed: its violations, the steps that touched the events concerned, and the
/// command that replays it.
fn print_failure(seed: u64, trifft_get_bursts: bool) {
    let report = run(seed, true, trifft_get_bursts);
    println!("\nSEED {seed} FAILED:");
    for v in &report.violations {
        println!("  {}: {} ({})", v.invariant, v.detail, v.key);
    }
    let keys: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.key.as_str())
        .filter(|k| !k.is_empty())
        .collect();
    println!("trace (steps naming {keys:?}):");
    for line in delivery_sim::relevant(&report.trace, &keys) {
        println!("  {line}");
    }
    let bursts = if trifft_get_bursts {
        ""
    } else {
        " --without-trifft-get-bursts"
    };
    println!("replay: cargo run --profile sim -p delivery-sim -- --seed {seed} --trace{bursts}\n");
}

fn run(seed: u64, trace: bool, trifft_get_bursts: bool) -> delivery_sim::Report {
    let mut plan = delivery_sim::Plan::from_seed(seed);
    plan.trifft_get_bursts = trifft_get_bursts;
    delivery_sim::run_plan(seed, plan, trace)
}

#[derive(Default)]
struct Totals {
    seeds: u64,
    deliveries: u64,
    invocations: u64,
    runs: u64,
    simulated: Duration,
    faults: u64,
    crashes: u64,
    ttl_deletes: u64,
    dlq_moves: u64,
    refused: u64,
    excused: u64,
    outages: u64,
    longest_outage: Duration,
    outage_dlq_moves: u64,
    outage_drain: Duration,
    long_outages: u64,
    long_outage_dlq_moves: u64,
    violations: u64,
}

impl Totals {
    fn add(&mut self, r: &delivery_sim::Report) {
        self.seeds += 1;
        self.deliveries += r.deliveries;
        self.invocations += r.invocations;
        self.runs += r.runs as u64;
        self.simulated += r.simulated;
        self.faults += r.faults;
        self.crashes += r.crashes;
        self.ttl_deletes += r.ttl_deletes;
        self.dlq_moves += r.dlq_moves;
        self.refused += r.refused as u64;
        self.excused += r.excused as u64;
        match r.outage {
            Some(length) if length < delivery_sim::aws::RETRY_HORIZON => {
                self.outages += 1;
                self.longest_outage = self.longest_outage.max(length);
                self.outage_dlq_moves += r.dlq_moves;
                self.outage_drain = self.outage_drain.max(r.outage_drain.unwrap_or_default());
            }
            Some(_) => {
                self.long_outages += 1;
                self.long_outage_dlq_moves += r.dlq_moves;
            }
            None => {}
        }
        self.violations += r.violations.len() as u64;
    }
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_time() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

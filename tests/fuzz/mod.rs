//! The document-space fuzzer (issue 18 item 4): generated mappings and documents through
//! `full-sync` and `sync` (mongo-sim with the official driver, a fresh Postgres database per
//! case), with the property that every document is either exactly the rows an independent
//! oracle predicts or a dead letter with a reason, and that the process never stops for a
//! document's content.
//!
//! Layout: `spec` (the fuzzer's mapping model and its YAML), `gen` (proptest strategies:
//! mappings, values, documents, writes), `forms`, `oracle` and `keys` (the prediction, from
//! SPEC and docs/mappings.md only), `pg` (reading Postgres back), `world` (one case end to
//! end) and `check` (the property), `regressions` (cases found, kept as tests).
//!
//! A bounded run is part of `cargo test`; `make fuzz FUZZ_SECONDS=3600` runs it as long as
//! asked (`TRIBUTARY_FUZZ_SECONDS`, `TRIBUTARY_FUZZ_CASES`). docs/testing.md has the details.

mod check;
mod forms;
mod gen;
mod keys;
mod oracle;
mod pg;
mod regressions;
mod spec;
mod world;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

use oracle::Rules;

/// What the generators produce beyond the ordinary, by the rule that handles it: NUL and the
/// `_id` rules of issue 18 (both landed in 388e4f1; turned off, the generators avoid NUL and
/// `_id`s that would collide), and strings that are not UTF-8 (off: mongo-sim closes the
/// connection of an insert holding one, so no document ever has one).
/// `TRIBUTARY_FUZZ_RULES=nul,strict_ids,invalid_utf8` turns them on for one run.
const RULES: Rules = Rules {
    nul: true,
    strict_ids: true,
    invalid_utf8: false,
};

fn rules() -> Rules {
    let mut r = RULES;
    if let Ok(list) = std::env::var("TRIBUTARY_FUZZ_RULES") {
        for name in list.split(',').map(str::trim) {
            match name {
                "nul" => r.nul = true,
                "strict_ids" => r.strict_ids = true,
                "invalid_utf8" => r.invalid_utf8 = true,
                "" => {}
                other => panic!(
                    "TRIBUTARY_FUZZ_RULES: unknown rule {other:?} (nul, strict_ids, invalid_utf8)"
                ),
            }
        }
    }
    r
}

/// Product bugs found and not fixed yet, by the name of their test in `regressions` (which is
/// `#[ignore]`d meanwhile): the checks step around them so that a run keeps looking for other
/// failures. Remove an entry, and the `#[ignore]`, once the fix is in.
const KNOWN_BUGS: &[&str] = &[];

pub fn known_bug(name: &str) -> bool {
    KNOWN_BUGS.contains(&name)
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// Cases per worker and round in the bounded run (`TRIBUTARY_FUZZ_CASES` overrides).
const BOUNDED_CASES: u32 = 14;
/// Workers: each runs its own cases (own runtime, simulators and databases);
/// `TRIBUTARY_FUZZ_WORKERS` overrides.
const WORKERS: usize = 2;

#[derive(Default)]
struct Tally {
    cases: AtomicUsize,
    documents: AtomicUsize,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs rounds of generated cases until the deadline (one round without one).
fn worker(
    rules: Rules,
    cases: u32,
    deadline: Option<Instant>,
    tally: &Tally,
) -> Result<(), String> {
    let rt = runtime();
    let long = deadline.is_some();
    loop {
        let config = Config {
            cases,
            max_shrink_iters: if long { 400 } else { 40 },
            max_shrink_time: if long { 1_800_000 } else { 300_000 },
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/fuzz/end_to_end.txt"
            )))),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&gen::case(rules, 30..130, 10..70), |case| {
            tally.cases.fetch_add(1, Ordering::Relaxed);
            tally
                .documents
                .fetch_add(case.documents(), Ordering::Relaxed);
            rt.block_on(world::run(&case, rules))
                .map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            return Err(e.to_string());
        }
        if deadline.is_none_or(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// With `TRIBUTARY_FUZZ_LOG` (an env filter such as `tributary=debug`), the product's logs go to
/// stderr: what it did with a failing case.
fn init_logs() {
    if let Ok(filter) = std::env::var("TRIBUTARY_FUZZ_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// The bounded run (and, with `TRIBUTARY_FUZZ_SECONDS`, the long one).
#[test]
fn end_to_end() {
    init_logs();
    let rules = rules();
    let cases = env_number("TRIBUTARY_FUZZ_CASES").map_or(BOUNDED_CASES, |n| n as u32);
    let deadline =
        env_number("TRIBUTARY_FUZZ_SECONDS").map(|s| Instant::now() + Duration::from_secs(s));
    let tally = Tally::default();
    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let workers = env_number("TRIBUTARY_FUZZ_WORKERS").map_or(WORKERS, |n| n as usize);
        for _ in 0..workers {
            s.spawn(|| {
                if let Err(e) = worker(rules, cases, deadline, &tally) {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    let cases = tally.cases.load(Ordering::Relaxed);
    println!(
        "fuzz: tried {} documents and {cases} mappings ({cases} cases, shrinking included) in {:.0} s \
         with rules {rules:?}; checks found {} documents as rows and {} as dead letters ({} \
         holding NUL, {} refused by Postgres); {} documents held strings that are not UTF-8",
        tally.documents.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        check::CHECKED_ROWS.load(Ordering::Relaxed),
        check::CHECKED_LETTERS.load(Ordering::Relaxed),
        check::CHECKED_NUL_LETTERS.load(Ordering::Relaxed),
        check::CHECKED_NARROWED.load(Ordering::Relaxed),
        check::CHECKED_UNREADABLE.load(Ordering::Relaxed),
    );
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

//! Wire fuzzing over TCP: malformed frames (random bytes, truncated headers,
//! lying lengths, unknown opcodes and flags, broken sections and BSON, huge
//! declared sizes, absurd nesting) and well-formed commands full of nonsense
//! values. Each case goes to its own connection, which the server must
//! answer or close, never hang on once the client has finished sending;
//! after every batch a fresh connection must still get `hello` answered,
//! and no server task may have panicked.
//!
//! Bounded by default (3,000 cases, a few seconds). Longer runs:
//!
//!     SIM_FUZZ_CASES=200000 cargo test -p mongo-sim --release --test wire_fuzz
//!     SIM_FUZZ_SECONDS=600 cargo test -p mongo-sim --release --test wire_fuzz
//!
//! `SIM_FUZZ_SEED=<n>` replays a run (the seed is printed on failure);
//! `SIM_FUZZ_KIND=<words>` keeps only the kinds of case whose name holds them
//! (e.g. `nonsense`).
//! A separate test binary, so its panic hook sees this server's panics only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, Document};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEFAULT_CASES: usize = 3000;
const BATCH: usize = 250;
/// Connections in flight at once.
const PARALLEL: usize = 8;
/// Longer than any honest reply takes; a server stuck on a case hits it.
const CASE_TIMEOUT: Duration = Duration::from_secs(20);

const OP_REPLY: i32 = 1;
const OP_QUERY: i32 = 2004;
const OP_MSG: i32 = 2013;
const OPCODES: [i32; 11] = [
    1, 1000, 2001, 2002, 2004, 2005, 2006, 2007, 2010, 2012, 2013,
];

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// One frame: header with the true length, then `body`.
fn frame(op: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(&((body.len() + 16) as i32).to_le_bytes());
    out.extend_from_slice(&7i32.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn bson_bytes(d: &Document) -> Vec<u8> {
    bson::to_vec(d).expect("test documents encode")
}

/// OP_MSG body: flags, one kind-0 section, then optional kind-1 sequences.
fn msg_body(flags: u32, command: &[u8], sequences: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
    let mut body = flags.to_le_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(command);
    for (ident, docs) in sequences {
        let mut seq = ident.as_bytes().to_vec();
        seq.push(0);
        for d in docs {
            seq.extend_from_slice(d);
        }
        body.push(1);
        body.extend_from_slice(&((seq.len() + 4) as i32).to_le_bytes());
        body.extend_from_slice(&seq);
    }
    body
}

fn op_msg(command: &Document) -> Vec<u8> {
    frame(OP_MSG, &msg_body(0, &bson_bytes(command), &[]))
}

fn op_query_body(collection: &[u8], query: &[u8]) -> Vec<u8> {
    let mut body = 0i32.to_le_bytes().to_vec();
    body.extend_from_slice(collection);
    body.push(0);
    body.extend_from_slice(&0i32.to_le_bytes());
    body.extend_from_slice(&(-1i32).to_le_bytes());
    body.extend_from_slice(query);
    body
}

/// `{"a": {"a": ... {}}}`, `depth` levels, built flat (no recursion here).
fn nested(depth: usize, array: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 8 + 5);
    for level in 0..depth {
        let size = 5 + 8 * (depth - level);
        out.extend_from_slice(&(size as i32).to_le_bytes());
        out.push(if array { 0x04 } else { 0x03 });
        out.extend_from_slice(if array { b"0\0" } else { b"a\0" });
    }
    out.extend_from_slice(&[5, 0, 0, 0, 0]);
    out.extend(std::iter::repeat_n(0u8, depth));
    out
}

fn valid_commands() -> Vec<Document> {
    vec![
        doc! {"hello": 1, "$db": "admin"},
        doc! {"ping": 1, "$db": "admin"},
        doc! {"insert": "c", "documents": [{"_id": 1, "a": "x"}], "$db": "fz"},
        doc! {"find": "c", "filter": {"a": {"$gt": 1}}, "$db": "fz"},
        doc! {"aggregate": "c", "pipeline": [{"$sample": {"size": 2}}], "cursor": {}, "$db": "fz"},
        doc! {"update": "c", "updates": [{"q": {}, "u": {"$set": {"b": 1}}}], "$db": "fz"},
    ]
}

/// A random BSON value, nonsense included, up to `depth` levels deep.
fn random_value(rng: &mut StdRng, depth: usize) -> Bson {
    const WORDS: [&str; 24] = [
        "$gt",
        "$in",
        "$regex",
        "$elemMatch",
        "$expr",
        "$sample",
        "$match",
        "$group",
        "$set",
        "$inc",
        "$each",
        "$slice",
        "$sort",
        "$project",
        "$size",
        "$",
        "$[]",
        "a.b",
        "_id",
        "",
        "size",
        "$$ROOT",
        "$a",
        "c",
    ];
    let word = |rng: &mut StdRng| WORDS[rng.gen_range(0..WORDS.len())].to_string();
    match rng.gen_range(0..14) {
        0 => Bson::Int32(
            *[0, 1, -1, i32::MAX, i32::MIN]
                .get(rng.gen_range(0..5))
                .unwrap_or(&0),
        ),
        1 => Bson::Int64(
            *[0, -1, i64::MAX, i64::MIN]
                .get(rng.gen_range(0..4))
                .unwrap_or(&0),
        ),
        2 => Bson::Double(
            *[f64::NAN, f64::INFINITY, -0.0, 1e308, -1e308, 0.5, 2.5]
                .get(rng.gen_range(0..7))
                .unwrap_or(&0.0),
        ),
        3 => Bson::Decimal128(
            ["NaN", "-Infinity", "1E+6144", "0.1", "-5"][rng.gen_range(0..5)]
                .parse()
                .expect("decimal literal"),
        ),
        4 => Bson::String(word(rng)),
        5 => Bson::Boolean(rng.gen()),
        6 => Bson::Null,
        7 => Bson::RegularExpression(bson::Regex {
            pattern: ["(", "a*", "[", "\\"][rng.gen_range(0..4)].into(),
            options: ["", "i", "zz"][rng.gen_range(0..3)].into(),
        }),
        8 => Bson::Timestamp(bson::Timestamp {
            time: rng.gen(),
            increment: rng.gen(),
        }),
        9 => Bson::DateTime(bson::DateTime::from_millis(rng.gen())),
        10 if depth > 0 => Bson::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ if depth > 0 => {
            let mut d = Document::new();
            for _ in 0..rng.gen_range(0..4) {
                d.insert(word(rng), random_value(rng, depth - 1));
            }
            Bson::Document(d)
        }
        _ => Bson::MinKey,
    }
}

/// A well-formed OP_MSG whose command is full of nonsense values. Commands
/// that change the server for everyone (fail points, write blocking) are
/// left out: they are not wire faults.
fn nonsense_command(rng: &mut StdRng) -> Vec<u8> {
    const COMMANDS: [&str; 26] = [
        "find",
        "insert",
        "update",
        "delete",
        "aggregate",
        "getMore",
        "killCursors",
        "count",
        "distinct",
        "findAndModify",
        "create",
        "drop",
        "listIndexes",
        "createIndexes",
        "dropIndexes",
        "collMod",
        "listCollections",
        "listDatabases",
        "commitTransaction",
        "abortTransaction",
        "renameCollection",
        "hello",
        "getParameter",
        "serverStatus",
        "endSessions",
        "nosuchcommand",
    ];
    let name = COMMANDS[rng.gen_range(0..COMMANDS.len())];
    let mut cmd = Document::new();
    // Mostly a real collection name, so handlers get past their first check.
    if rng.gen_bool(0.7) {
        cmd.insert(name, "c");
    } else {
        cmd.insert(name, random_value(rng, 1));
    }
    const ARGS: [&str; 22] = [
        "filter",
        "documents",
        "updates",
        "deletes",
        "pipeline",
        "cursor",
        "sort",
        "skip",
        "limit",
        "batchSize",
        "projection",
        "query",
        "update",
        "remove",
        "new",
        "upsert",
        "key",
        "indexes",
        "index",
        "to",
        "collection",
        "maxTimeMS",
    ];
    for _ in 0..rng.gen_range(0..5) {
        let arg = ARGS[rng.gen_range(0..ARGS.len())];
        let value = match rng.gen_range(0..3) {
            // An array of documents, the shape most arguments take.
            0 => Bson::Array(
                (0..rng.gen_range(1..4))
                    .map(|_| match random_value(rng, 3) {
                        doc @ Bson::Document(_) => doc,
                        other => Bson::Document(doc! {"q": other.clone(), "u": other}),
                    })
                    .collect(),
            ),
            _ => random_value(rng, 3),
        };
        cmd.insert(arg, value);
    }
    // Rarely without `$db` or inside a transaction that does not exist.
    if rng.gen_bool(0.9) {
        cmd.insert("$db", "fz");
    }
    if rng.gen_bool(0.1) {
        cmd.insert(
            "lsid",
            doc! {"id": Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: vec![rng.gen(); 16],
            })},
        );
        cmd.insert("txnNumber", 1i64);
        cmd.insert("autocommit", false);
        cmd.insert("startTransaction", rng.gen_bool(0.5));
    }
    match bson::to_vec(&cmd) {
        Ok(bytes) => frame(OP_MSG, &msg_body(0, &bytes, &[])),
        Err(_) => op_msg(&doc! {"ping": 1, "$db": "admin"}),
    }
}

/// Flips, overwrites, inserts or deletes a few bytes.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..6) {
        if bytes.is_empty() {
            bytes.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..bytes.len());
        match rng.gen_range(0..4) {
            0 => bytes[at] ^= 1 << rng.gen_range(0..8),
            1 => {
                bytes[at] = *[0u8, 1, 0x7F, 0x80, 0xFF]
                    .get(rng.gen_range(0..5))
                    .unwrap_or(&0)
            }
            2 => bytes.insert(at, rng.gen()),
            _ => {
                bytes.remove(at);
            }
        }
    }
}

/// Replaces the 4-byte little-endian length at `at` with a lie.
fn lie_about_length(rng: &mut StdRng, bytes: &mut [u8], at: usize) {
    if bytes.len() < at + 4 {
        return;
    }
    let real = i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let lie: i32 = match rng.gen_range(0..9) {
        0 => 0,
        1 => -1,
        2 => i32::MIN,
        3 => i32::MAX,
        4 => real.wrapping_sub(1),
        5 => real.wrapping_add(1),
        6 => real.wrapping_add(rng.gen_range(2..100_000)),
        7 => rng.gen_range(0..16),
        _ => rng.gen(),
    };
    bytes[at..at + 4].copy_from_slice(&lie.to_le_bytes());
}

/// One case: the bytes a client sends on a fresh connection, and its kind.
fn generate(rng: &mut StdRng) -> (&'static str, Vec<u8>) {
    let valid = valid_commands();
    let pick = |rng: &mut StdRng| op_msg(&valid[rng.gen_range(0..valid.len())]);
    match rng.gen_range(0..16) {
        0 => {
            let n = rng.gen_range(0..256);
            ("random bytes", (0..n).map(|_| rng.gen()).collect())
        }
        1 => {
            // A header cut short, or a header alone.
            let mut f = pick(rng);
            f.truncate(rng.gen_range(0..=16));
            ("truncated header", f)
        }
        2 => {
            let mut f = pick(rng);
            f.truncate(rng.gen_range(16..f.len()));
            ("truncated body", f)
        }
        3 => {
            let mut f = pick(rng);
            lie_about_length(rng, &mut f, 0);
            ("lying message length", f)
        }
        4 => {
            // Sizes up to and beyond the 48 MB limit, then a few bytes.
            let declared: i32 = *[47_999_999, 48_000_000, 48_000_001, 1 << 30, i32::MAX]
                .get(rng.gen_range(0..5))
                .unwrap_or(&i32::MAX);
            let mut f = declared.to_le_bytes().to_vec();
            f.extend_from_slice(&[0u8; 8]);
            f.extend_from_slice(&OP_MSG.to_le_bytes());
            f.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>()));
            ("huge declared size", f)
        }
        5 => {
            let op = if rng.gen_bool(0.5) {
                OPCODES[rng.gen_range(0..OPCODES.len())]
            } else {
                rng.gen()
            };
            let body: Vec<u8> = (0..rng.gen_range(0..128)).map(|_| rng.gen()).collect();
            ("opcode with random body", frame(op, &body))
        }
        6 => {
            let flags = *[1u32, 2, 3, 1 << 4, 1 << 15, 1 << 16, u32::MAX]
                .get(rng.gen_range(0..7))
                .unwrap_or(&0);
            let cmd = bson_bytes(&valid[rng.gen_range(0..valid.len())]);
            ("OP_MSG flags", frame(OP_MSG, &msg_body(flags, &cmd, &[])))
        }
        7 => {
            // Kind-0 document with a lying length, or several kind-0 sections,
            // or an unknown section kind.
            let cmd = bson_bytes(&valid[rng.gen_range(0..valid.len())]);
            let mut body = msg_body(0, &cmd, &[]);
            match rng.gen_range(0..3) {
                0 => lie_about_length(rng, &mut body, 5),
                1 => {
                    body.push(0);
                    body.extend_from_slice(&cmd);
                }
                _ => {
                    body.push(rng.gen_range(2..=255));
                    body.extend_from_slice(&cmd);
                }
            }
            ("OP_MSG sections", frame(OP_MSG, &body))
        }
        8 => {
            // A kind-1 sequence with a lying size, a bad identifier or bad documents.
            let cmd = bson_bytes(&doc! {"insert": "c", "$db": "fz"});
            let docs = vec![bson_bytes(&doc! {"_id": 1}), bson_bytes(&doc! {"_id": 2})];
            let mut body = msg_body(0, &cmd, &[("documents", docs)]);
            let seq_at = 4 + 1 + cmd.len() + 1;
            match rng.gen_range(0..3) {
                0 => lie_about_length(rng, &mut body, seq_at),
                1 => {
                    // Identifier without its NUL, or not UTF-8.
                    let ident_at = seq_at + 4;
                    let nul = ident_at + "documents".len();
                    body[nul] = b'x';
                    if rng.gen_bool(0.5) {
                        body[ident_at] = 0xFF;
                    }
                }
                _ => {
                    let doc_at = seq_at + 4 + "documents".len() + 1;
                    lie_about_length(rng, &mut body, doc_at);
                }
            }
            ("OP_MSG document sequence", frame(OP_MSG, &body))
        }
        9 => {
            // Broken BSON inside a valid frame.
            let mut cmd = bson_bytes(&valid[rng.gen_range(0..valid.len())]);
            mutate(rng, &mut cmd);
            ("bad BSON", frame(OP_MSG, &msg_body(0, &cmd, &[])))
        }
        10 => {
            let mut f = pick(rng);
            mutate(rng, &mut f);
            ("mutated frame", f)
        }
        11 => {
            let depth = *[150usize, 199, 200, 201, 1_000, 20_000, 200_000]
                .get(rng.gen_range(0..7))
                .unwrap_or(&200_000);
            let deep = nested(depth, rng.gen_bool(0.3));
            // As a field of the command, or as an inserted document.
            let mut cmd = bson_bytes(&doc! {"insert": "deep", "$db": "fz"});
            let body = if rng.gen_bool(0.5) {
                msg_body(0, &cmd, &[("documents", vec![deep])])
            } else {
                // Splice `filter: <deep>` in front of the terminator.
                cmd.pop();
                cmd.push(0x03);
                cmd.extend_from_slice(b"filter\0");
                cmd.extend_from_slice(&deep);
                cmd.push(0);
                let len = cmd.len() as i32;
                cmd[..4].copy_from_slice(&len.to_le_bytes());
                msg_body(0, &cmd, &[])
            };
            ("deep nesting", frame(OP_MSG, &body))
        }
        12 => {
            let query = bson_bytes(&doc! {"isMaster": 1});
            let body = match rng.gen_range(0..4) {
                0 => {
                    let mut b = op_query_body(b"admin.$cmd", &query);
                    b.truncate(rng.gen_range(0..b.len()));
                    b
                }
                1 => op_query_body(&[0xFF, 0xFE, b'$'], &query),
                2 => 0i32
                    .to_le_bytes()
                    .iter()
                    .copied()
                    .chain(*b"no-nul")
                    .collect(),
                _ => {
                    let mut q = query.clone();
                    mutate(rng, &mut q);
                    op_query_body(b"admin.$cmd", &q)
                }
            };
            ("OP_QUERY", frame(OP_QUERY, &body))
        }
        13 => ("nonsense command", nonsense_command(rng)),
        14 => {
            // Good frames, then a bad one on the same connection.
            let mut f = pick(rng);
            f.extend(pick(rng));
            let mut bad = pick(rng);
            mutate(rng, &mut bad);
            f.extend(bad);
            ("good frames then a bad one", f)
        }
        _ => {
            // A checksum flag with no room for the checksum, or an OP_MSG too short.
            let body = match rng.gen_range(0..3) {
                0 => 1u32.to_le_bytes().iter().copied().chain([0, 5]).collect(),
                1 => vec![0, 0, 0, 0],
                _ => vec![0, 0, 0, 0, 0],
            };
            ("short OP_MSG", frame(OP_MSG, &body))
        }
    }
}

fn hex_head(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(96).map(|b| format!("{b:02x}")).collect();
    format!("{} ({} bytes)", shown.join(""), bytes.len())
}

/// Sends one case and waits until the server has answered and closed, or
/// just closed, once the client has nothing more to send.
async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let mut sock = TcpStream::connect(addr).await?;
    // The server may close mid-write, which is a fine outcome.
    if sock.write_all(bytes).await.is_ok() {
        let _ = sock.shutdown().await;
    }
    let mut sink = [0u8; 64 * 1024];
    loop {
        match sock.read(&mut sink).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// A fresh connection gets its `hello` answered.
async fn hello_answers(addr: std::net::SocketAddr) {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(&op_msg(&doc! {"hello": 1, "$db": "admin"}))
        .await
        .expect("send hello");
    let mut header = [0u8; 16];
    tokio::time::timeout(CASE_TIMEOUT, sock.read_exact(&mut header))
        .await
        .expect("hello answered in time")
        .expect("hello reply header");
    let len = i32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let op = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    assert_eq!(
        op, OP_MSG,
        "hello is answered with OP_MSG, not {op} ({OP_REPLY} = OP_REPLY)"
    );
    let mut body = vec![0u8; len - 16];
    sock.read_exact(&mut body).await.expect("hello reply body");
    let reply = Document::from_reader(&body[5..]).expect("hello reply is BSON");
    assert_eq!(reply.get_bool("isWritablePrimary"), Ok(true), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_own_connection() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    // A time budget (`make fuzz`) runs whole batches until it is spent.
    let deadline =
        env_number("SIM_FUZZ_SECONDS").map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let cases = match deadline {
        Some(_) => usize::MAX,
        None => env_number("SIM_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize),
    };
    let seed = env_number("SIM_FUZZ_SEED").unwrap_or_else(rand::random);
    let only = std::env::var("SIM_FUZZ_KIND").ok();
    eprintln!("wire fuzz: SIM_FUZZ_SEED={seed}");
    let sim = mongo_sim::start(mongo_sim::SimOptions::default())
        .await
        .expect("start simulator");
    let addr = sim.addr();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = 0;
    // Cases and total time per kind, for the closing summary.
    let mut kinds: std::collections::BTreeMap<&str, (usize, Duration)> = Default::default();
    while done < cases && deadline.is_none_or(|d| std::time::Instant::now() < d) {
        let batch: Vec<(usize, &'static str, Vec<u8>)> = (done..cases.min(done + BATCH))
            .map(|i| {
                let (kind, bytes) = loop {
                    let (kind, bytes) = generate(&mut rng);
                    if only.as_deref().is_none_or(|k| kind.contains(k)) {
                        break (kind, bytes);
                    }
                };
                (i, kind, bytes)
            })
            .collect();
        done += batch.len();
        let mut running =
            futures::stream::iter(batch.into_iter().map(|(i, kind, bytes)| async move {
                let started = std::time::Instant::now();
                let outcome = tokio::time::timeout(CASE_TIMEOUT, send(addr, &bytes)).await;
                (i, kind, bytes, outcome, started.elapsed())
            }))
            .buffer_unordered(PARALLEL);
        while let Some((i, kind, bytes, outcome, took)) = running.next().await {
            let entry = kinds.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += took;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!(
                    "case {i} ({kind}, seed {seed}): cannot connect: {e}; {}",
                    hex_head(&bytes)
                ),
                Err(_) => panic!(
                    "case {i} ({kind}, seed {seed}): server neither answered nor closed; {}",
                    hex_head(&bytes)
                ),
            }
        }
        hello_answers(addr).await;
        assert_eq!(
            panics.load(Ordering::SeqCst),
            0,
            "a server task panicked within cases {}..{done} (seed {seed})",
            done - BATCH.min(done)
        );
    }
    for (kind, (n, took)) in &kinds {
        eprintln!("  {kind}: {n} cases, {took:.1?} in all");
    }
    eprintln!("wire fuzz: {done} cases sent, server still answering");
    sim.shutdown().await;
}

//! What every benchmark prints and records: its sizes from the environment, the machine and
//! its load, and its own section of BENCHMARKS.md.

#![allow(dead_code)]

use std::path::Path;

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

pub fn env_set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let ram_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} CPUs (`nproc`), {cpu}, {ram_gib:.1} GiB RAM")
}

/// The 1-minute load average: the machine is shared, so every section says how busy it was.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Replaces the `heading` section of BENCHMARKS.md (up to the next `## ` heading) or appends
/// it; every other section stays as it is.
pub fn write_section(heading: &str, body: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let section = format!("{heading}\n\n{}\n", body.trim_end());
    let marker = format!("{heading}\n");
    let new = match old.find(&marker) {
        Some(start) => {
            let after = start + marker.len();
            let end = old[after..]
                .find("\n## ")
                .map_or(old.len(), |i| after + i + 1);
            format!("{}{section}{}", &old[..start], {
                let rest = &old[end..];
                if rest.is_empty() {
                    String::new()
                } else {
                    format!("\n{rest}")
                }
            })
        }
        None => format!(
            "{}\n{section}",
            old.trim_end_matches('\n').to_owned() + "\n"
        ),
    };
    std::fs::write(&path, new).expect("cannot write BENCHMARKS.md");
    eprintln!("BENCHMARKS.md: {heading} refreshed");
}

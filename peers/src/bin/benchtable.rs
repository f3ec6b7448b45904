//! Prints criterion's results for the frame bench as compact tables of medians and ratios.
//!
//! ```text
//! benchtable [target/criterion ...]
//! ```
//!
//! Given the results of several runs (copies of criterion's directory, as `scripts/bench.sh --runs N`
//! keeps them), each figure is the median over the runs of criterion's median in each.
//!
//! For each group (decode_binary, decode_text, decode_fragmented, in_place_binary, in_place_text,
//! encode_binary) and input, one row: the median time of each contender with its throughput,
//! wsloop's time as a multiple of memcpy's, and each peer's time divided by wsloop's (above 1:
//! wsloop is faster).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

const CONTENDERS: [&str; 4] = ["memcpy", "wsloop", "tungstenite", "fastwebsockets"];

struct Result {
    /// Criterion's median in each run.
    runs_ns: Vec<f64>,
    /// ("Bytes" or "Elements", count per iteration)
    throughput: Option<(String, f64)>,
}

fn main() {
    let mut roots: Vec<String> = std::env::args().skip(1).collect();
    if roots.is_empty() {
        roots.push("target/criterion".into());
    }
    // group -> input -> contender -> result
    let mut groups: BTreeMap<String, BTreeMap<String, BTreeMap<String, Result>>> = BTreeMap::new();
    let mut inputs_in_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for group in roots.iter().flat_map(|root| read_dirs(Path::new(root))) {
        for contender in read_dirs(&group) {
            for input in read_dirs(&contender) {
                let dir = input.join("new");
                let (Ok(estimates), Ok(benchmark)) = (
                    fs::read_to_string(dir.join("estimates.json")),
                    fs::read_to_string(dir.join("benchmark.json")),
                ) else {
                    continue;
                };
                let (Some(median_ns), Some(group_id), Some(function_id), Some(value)) = (
                    number_after(&estimates, "\"median\"", "\"point_estimate\":"),
                    string_field(&benchmark, "\"group_id\":"),
                    string_field(&benchmark, "\"function_id\":"),
                    string_field(&benchmark, "\"value_str\":"),
                ) else {
                    continue;
                };
                let throughput = ["Bytes", "Elements"].iter().find_map(|kind| {
                    let n = number_after(&benchmark, "\"throughput\"", &format!("\"{kind}\":"))?;
                    Some((kind.to_string(), n))
                });
                let order = inputs_in_order.entry(group_id.clone()).or_default();
                if !order.contains(&value) {
                    order.push(value.clone());
                }
                groups
                    .entry(group_id)
                    .or_default()
                    .entry(value)
                    .or_default()
                    .entry(function_id)
                    .or_insert(Result {
                        runs_ns: Vec::new(),
                        throughput,
                    })
                    .runs_ns
                    .push(median_ns);
            }
        }
    }
    if groups.is_empty() {
        eprintln!(
            "no criterion results under {}: run `cargo bench --bench frame` first",
            roots.join(", ")
        );
        std::process::exit(1);
    }
    let runs = roots.len();

    for (group, inputs) in &groups {
        println!("\n{group}  (median per input over {runs} run(s); throughput; wsloop/memcpy time; peer time / wsloop time, >1 = wsloop faster)");
        println!(
            "{:<22} {:>22} {:>22} {:>22} {:>22} {:>8} {:>8} {:>8}",
            "input",
            "memcpy",
            "wsloop",
            "tungstenite",
            "fastwebsockets",
            "ws/mem",
            "tung/ws",
            "fast/ws"
        );
        let mut order = inputs_in_order[group].clone();
        order.sort_by_key(|v| size_key(v));
        for input in order {
            let row = &inputs[&input];
            let cell = |name: &str| row.get(name).map_or("-".to_string(), format_result);
            let ratio = |a: &str, b: &str| match (row.get(a), row.get(b)) {
                (Some(a), Some(b)) => format!("{:.2}", a.median_ns() / b.median_ns()),
                _ => "-".into(),
            };
            println!(
                "{:<22} {:>22} {:>22} {:>22} {:>22} {:>8} {:>8} {:>8}",
                input,
                cell(CONTENDERS[0]),
                cell(CONTENDERS[1]),
                cell(CONTENDERS[2]),
                cell(CONTENDERS[3]),
                ratio("wsloop", "memcpy"),
                ratio("tungstenite", "wsloop"),
                ratio("fastwebsockets", "wsloop"),
            );
        }
    }
}

impl Result {
    /// The median over the runs (the upper one of the middle two, for an even count).
    fn median_ns(&self) -> f64 {
        let mut runs = self.runs_ns.clone();
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    }
}

fn format_result(r: &Result) -> String {
    let median_ns = r.median_ns();
    let time = match median_ns {
        t if t >= 1e6 => format!("{:.2} ms", t / 1e6),
        t if t >= 1e3 => format!("{:.1} us", t / 1e3),
        t => format!("{t:.0} ns"),
    };
    let rate = match &r.throughput {
        Some((kind, n)) if kind == "Bytes" => {
            format!("{:.1} GiB/s", n / median_ns * 1e9 / (1u64 << 30) as f64)
        }
        Some((_, n)) => format!("{:.0} M/s", n / median_ns * 1e3),
        None => String::new(),
    };
    format!("{time} {rate}")
}

/// Orders "16B" < "1KiB" < "64KiB" < "1MiB"; other labels sort by name after sizes.
fn size_key(label: &str) -> (u64, String) {
    let digits: String = label.chars().take_while(char::is_ascii_digit).collect();
    let unit = &label[digits.len()..];
    let scale = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        _ => return (u64::MAX, label.to_string()),
    };
    (digits.parse::<u64>().unwrap_or(0) * scale, String::new())
}

fn read_dirs(path: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = fs::read_dir(path) else {
        return vec![];
    };
    let mut dirs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The number after `key`, searching from the first `section`: enough JSON for criterion's files.
fn number_after(json: &str, section: &str, key: &str) -> Option<f64> {
    let from = json.find(section)?;
    let at = from + json[from..].find(key)? + key.len();
    let text: String = json[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
        .collect();
    text.parse().ok()
}

fn string_field(json: &str, key: &str) -> Option<String> {
    let at = json.find(key)? + key.len();
    let rest = json[at..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

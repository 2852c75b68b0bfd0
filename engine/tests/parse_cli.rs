//! End to end: `logsight parse` on a shared Loghub sample, scored with the project's own
//! accuracy code, plus its error and bad-input behaviour.

use logsight_benches::load;
use operators::scoring::evaluate;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn logsight() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logsight"))
}

#[test]
fn parse_groups_a_loghub_sample_above_the_floor() {
    let data = load("Zookeeper").expect("dataset");
    let path = logsight_benches::loghub_dir()
        .expect("dir")
        .join("Zookeeper/Zookeeper_2k.log");
    let out = logsight()
        .args(["parse", "--format", "zookeeper"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(docs.len(), data.rows.len(), "one result per input line");
    let predicted: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["template_id"].as_str().unwrap_or_default().to_owned(),
                d["template"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let truth: Vec<String> = data.rows.iter().map(|r| r.template.clone()).collect();
    let acc = evaluate(&truth, &predicted);
    assert!(acc.ga >= 0.95, "GA {:.3}", acc.ga);
    // Header fields and the analytics fields are all there, in input order.
    let first = &docs[0];
    assert_eq!(first["Node"], "QuorumPeer[myid=1]/0");
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["timestamp"], "2015-07-29T17:41:44.747Z");
    for key in [
        "params",
        "prediction",
        "anomaly_score",
        "risk_score",
        "added_state",
    ] {
        assert!(first.get(key).is_some(), "missing {key}");
    }
    assert_eq!(first["message"], data.rows[0].content);
}

#[test]
fn summary_lists_templates_with_counts() {
    let path = logsight_benches::loghub_dir()
        .expect("dir")
        .join("Apache/Apache_2k.log");
    let out = logsight()
        .args(["parse", "--summary", "--format", "apache"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // Apache's ground truth has 6 templates; the largest covers 836 lines.
    assert_eq!(text.lines().count(), 1 + 6, "{text}");
    assert!(text
        .lines()
        .nth(1)
        .is_some_and(|l| l.trim_start().starts_with("836 ")));
}

#[test]
fn invalid_utf8_and_mismatching_lines_are_flagged_not_dropped() {
    let mut child = logsight()
        .args(["parse", "--format", "<Level>: <Content>", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"INFO: all good 1\n\xff\xfe broken 2\nno header here\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let docs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["level"], "INFO");
    assert_eq!(docs[1]["invalid_utf8"], true);
    assert_eq!(docs[1]["format_mismatch"], true);
    assert_eq!(docs[2]["format_mismatch"], true);
    assert_eq!(docs[2]["message"], "no header here");
}

#[test]
fn errors_are_one_clear_line_and_a_failure_code() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["parse", "/no/such/file.log"],
            "cannot read /no/such/file.log",
        ),
        (&["parse", "--format", "<Date", "-"], "never closed"),
        (&["parse", "--format", "<Date> <Time>", "-"], "Content"),
    ];
    for (args, needle) in cases {
        let out = logsight()
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line, no backtrace: {err}"
        );
        assert!(err.starts_with("error: "), "{err}");
    }
}

#[test]
fn a_bad_mask_in_the_config_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[analytics.mask]]\nname = \"BROKEN\"\nregex = \"(\"\n",
    )
    .expect("write");
    let out = logsight()
        .args(["parse", "--config"])
        .arg(&config)
        .arg("-")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BROKEN"), "{err}");
}

//! kill -9 during a long run, restart with the same data dir: exactly one document per input
//! line and the same template ids as an uninterrupted run.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn restart_after_kill_9_ends_with_one_document_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.log");
    let lines = repeated_input(&input, 6);
    let input = input.display().to_string();
    let args = |dir: &str| -> Vec<String> {
        [
            "run",
            &input,
            "--data-dir",
            dir,
            "-w",
            "2",
            "--epoch-lines",
            "2000",
            "--progress-secs",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let reference = tmp.path().join("reference");
    let r = reference.display().to_string();
    let a: Vec<String> = args(&r);
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());

    let crashed = tmp.path().join("crashed");
    let c = crashed.display().to_string();
    let a = args(&c);
    let mut child = logsight(&a.iter().map(String::as_str).collect::<Vec<_>>())
        .spawn()
        .unwrap();
    wait_for_commit(&crashed, 3, &mut child, Duration::from_secs(120));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = stored_lines(&crashed, "default_pipeline").len();
    assert!(
        partial < lines,
        "killed too late: {partial} of {lines} lines written"
    );

    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let after = documents(&crashed, "default_pipeline"); // asserts no duplicate ids
    assert_eq!(stored_lines(&crashed, "default_pipeline").len(), lines);
    assert_eq!(after.len(), lines);
    let reference = documents(&reference, "default_pipeline");
    assert_eq!(template_ids(&after), template_ids(&reference));
    assert!(
        after == reference,
        "documents differ from the uninterrupted run"
    );

    // A third run over the same finished input reads nothing new and writes nothing.
    let out = run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 lines in"));
    assert_eq!(stored_lines(&crashed, "default_pipeline").len(), lines);
}

#[test]
fn sigterm_commits_what_was_read_and_a_restart_reads_exactly_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("big.log");
    let lines = repeated_input(&input, 6);
    let input = input.display().to_string();
    let dir = tmp.path().join("stopped");
    let d = dir.display().to_string();
    let args = [
        "run",
        &input,
        "--data-dir",
        &d,
        "--epoch-lines",
        "2000",
        "--progress-secs",
        "0",
    ];
    let mut child = logsight(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_commit(&dir, 3, &mut child, Duration::from_secs(120));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("stopped on a signal"), "{stderr}");
    let partial = documents(&dir, "default_pipeline").len(); // asserts no duplicate ids
    assert!(
        partial > 0 && partial < lines,
        "{partial} of {lines} lines written"
    );

    // Everything written was committed: the restart reads exactly the lines not yet written.
    let out = run_ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} lines in", lines - partial)),
        "{stderr}"
    );
    assert_eq!(documents(&dir, "default_pipeline").len(), lines);
}

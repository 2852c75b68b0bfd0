//! The same files through -w1, -w2 and 2 processes × 1 worker give the same documents, with
//! the same template id for every line.

mod common;

use common::*;
use std::process::Command;

fn inputs() -> Vec<String> {
    DATASETS
        .iter()
        .map(|d| dataset(d).display().to_string())
        .collect()
}

fn run_workers(dir: &std::path::Path, workers: &str) {
    let d = dir.display().to_string();
    let mut args = vec![
        "run",
        "--data-dir",
        &d,
        "--epoch-lines",
        "3000",
        "-w",
        workers,
        "--progress-secs",
        "0",
    ];
    let inputs = inputs();
    args.extend(inputs.iter().map(String::as_str));
    run_ok(&args);
}

#[test]
fn workers_and_processes_give_the_same_documents() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, procs) = (
        tmp.path().join("w1"),
        tmp.path().join("w2"),
        tmp.path().join("p2"),
    );
    run_workers(&one, "1");
    run_workers(&two, "2");

    let hostfile = tmp.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let d = procs.display().to_string();
    let h = hostfile.display().to_string();
    let inputs = inputs();
    let spawn = |p: &str| {
        let mut cmd = Command::new(bin());
        cmd.args([
            "run",
            "--data-dir",
            &d,
            "--epoch-lines",
            "3000",
            "-w",
            "1",
            "-n",
            "2",
            "-p",
            p,
            "--hostfile",
            &h,
            "--progress-secs",
            "0",
        ]);
        cmd.args(&inputs);
        cmd.spawn().expect("spawn process")
    };
    let (mut p0, mut p1) = (spawn("0"), spawn("1"));
    assert!(p0.wait().unwrap().success());
    assert!(p1.wait().unwrap().success());

    let a = documents(&one, "default_pipeline");
    let b = documents(&two, "default_pipeline");
    let c = documents(&procs, "default_pipeline");
    assert_eq!(a.len(), 16_000);
    // Work was really spread: both workers wrote documents.
    assert!(std::fs::read_dir(&two).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with("-w001.ndjson")));
    assert_eq!(template_ids(&a), template_ids(&b));
    assert_eq!(template_ids(&a), template_ids(&c));
    assert!(a == b, "-w1 and -w2 documents differ");
    assert!(a == c, "-w1 and 2-process documents differ");
    let templates: std::collections::BTreeSet<_> = template_ids(&a).into_values().collect();
    assert!(templates.len() > 100, "only {} templates", templates.len());
}

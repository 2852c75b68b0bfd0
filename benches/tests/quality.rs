//! Quality floors on the Loghub 2k samples, so a change that hurts parsing or anomaly detection
//! fails the test suite rather than only showing up in a benchmark table.

use logsight_benches::{load, DATASETS};
use operators::analyze::{AnalyticsConfig, LineAnalyzer};
use operators::anomaly::keyword_baseline;
use operators::format::FormatSet;
use operators::scoring::evaluate;

#[test]
fn grouping_and_parsing_accuracy_stay_above_the_targets() {
    let config = AnalyticsConfig::default();
    let (mut ga_sum, mut pa_sum) = (0.0, 0.0);
    for name in DATASETS {
        let data = load(name).expect("dataset loads");
        let formats = FormatSet::resolve(&name.to_lowercase()).expect("named format");
        let mut analyzer = LineAnalyzer::new(&config, Some(formats)).expect("analyzer");
        let predicted: Vec<_> = data
            .raw_lines
            .iter()
            .map(|l| {
                let r = analyzer.analyze_line("test", l).result;
                (r.template_id.to_string(), r.template.to_string())
            })
            .collect();
        let truth: Vec<String> = data.rows.iter().map(|r| r.template.clone()).collect();
        let acc = evaluate(&truth, &predicted);
        assert!(acc.ga >= 0.85, "{name}: GA {:.3} below 0.85", acc.ga);
        ga_sum += acc.ga;
        pa_sum += acc.pa;
    }
    let n = DATASETS.len() as f64;
    assert!(ga_sum / n >= 0.95, "average GA {:.3}", ga_sum / n);
    assert!(pa_sum / n >= 0.80, "average PA {:.3}", pa_sum / n);
}

#[test]
fn anomaly_f1_on_bgl_beats_the_keyword_baseline() {
    let data = load("BGL").expect("BGL loads");
    let config = AnalyticsConfig::default();
    let mut analyzer =
        LineAnalyzer::new(&config, Some(FormatSet::resolve("bgl").expect("bgl"))).expect("ok");
    let (mut ours, mut base) = ([0usize; 3], [0usize; 3]);
    for (line, row) in data.raw_lines.iter().zip(&data.rows) {
        let actual = row.label.as_deref().is_some_and(|l| l != "-");
        let predicted = analyzer.analyze_line("bgl", line).result.prediction == 1;
        count(&mut ours, predicted, actual);
        count(&mut base, keyword_baseline(&row.content), actual);
    }
    let (f_ours, f_base) = (f1(ours), f1(base));
    assert!(f_ours > 0.5, "our F1 {f_ours:.3}");
    assert!(
        f_ours > 1.5 * f_base,
        "ours {f_ours:.3} vs baseline {f_base:.3}"
    );
}

/// [true positives, false positives, false negatives]
fn count(c: &mut [usize; 3], predicted: bool, actual: bool) {
    match (predicted, actual) {
        (true, true) => c[0] += 1,
        (true, false) => c[1] += 1,
        (false, true) => c[2] += 1,
        (false, false) => {}
    }
}

fn f1([tp, fp, fn_]: [usize; 3]) -> f64 {
    if tp == 0 {
        return 0.0;
    }
    let p = tp as f64 / (tp + fp) as f64;
    let r = tp as f64 / (tp + fn_) as f64;
    2.0 * p * r / (p + r)
}

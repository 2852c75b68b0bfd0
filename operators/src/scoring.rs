//! Parsing-accuracy metrics: grouping accuracy (GA), parsing accuracy (PA), and the F1 scores
//! over groups (FGA) and over groups with correct templates (FTA), plus the template
//! canonicalisation both sides are compared under.
//!
//! Definitions follow Zhu et al. (ISSRE 2019) and Jiang et al. (2024); templates are compared
//! after the correction rules of Khan et al. (ICSE 2022), applied alike to the ground truth and
//! to our output, so conventions (e.g. `blk_<*>` vs `<*>`) do not count as errors.

use rustc_hash::{FxHashMap, FxHashSet};

/// Accuracy of one parse against its ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub lines: usize,
    pub ga: f64,
    pub pa: f64,
    pub fga: f64,
    pub fta: f64,
    pub truth_groups: usize,
    pub predicted_groups: usize,
}

/// Scores predicted `(group id, template)` per line against ground-truth templates per line.
/// Ground-truth groups are the lines sharing a (canonical) template.
pub fn evaluate(truth: &[String], predicted: &[(String, String)]) -> Accuracy {
    let n = truth.len().min(predicted.len());
    let truth: Vec<String> = truth[..n].iter().map(|t| canonical_template(t)).collect();
    let templates: Vec<String> = predicted[..n]
        .iter()
        .map(|(_, t)| canonical_template(t))
        .collect();
    let truth_groups = group_lines(truth.iter().map(String::as_str));
    let predicted_groups = group_lines(predicted[..n].iter().map(|(g, _)| g.as_str()));

    // Each truth group as a sorted line list, for exact set comparison.
    let truth_sets: FxHashSet<&[usize]> = truth_groups.values().map(Vec::as_slice).collect();
    let (mut grouped_lines, mut correct_groups, mut correct_template_groups) = (0, 0, 0);
    for lines in predicted_groups.values() {
        if truth_sets.contains(lines.as_slice()) {
            grouped_lines += lines.len();
            correct_groups += 1;
            let first = lines[0];
            if templates[first] == truth[first] {
                correct_template_groups += 1;
            }
        }
    }
    let parsed_lines = (0..n).filter(|&i| templates[i] == truth[i]).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Accuracy {
        lines: n,
        ga: ratio(grouped_lines, n),
        pa: ratio(parsed_lines, n),
        fga: f1(correct_groups, predicted_groups.len(), truth_groups.len()),
        fta: f1(
            correct_template_groups,
            predicted_groups.len(),
            truth_groups.len(),
        ),
        truth_groups: truth_groups.len(),
        predicted_groups: predicted_groups.len(),
    }
}

/// Lines per key, each list in ascending line order.
fn group_lines<'a>(keys: impl Iterator<Item = &'a str>) -> FxHashMap<&'a str, Vec<usize>> {
    let mut groups: FxHashMap<&str, Vec<usize>> = FxHashMap::default();
    for (i, k) in keys.enumerate() {
        groups.entry(k).or_default().push(i);
    }
    groups
}

fn f1(correct: usize, predicted: usize, truth: usize) -> f64 {
    if correct == 0 || predicted == 0 || truth == 0 {
        return 0.0;
    }
    let precision = correct as f64 / predicted as f64;
    let recall = correct as f64 / truth as f64;
    2.0 * precision * recall / (precision + recall)
}

const PATH_DELIMITERS: &[char] = &[
    ' ', ',', '!', ';', ':', '=', '|', '"', '\'', '[', ']', '(', ')', '{', '}',
];
const EXTRA_TOKEN_DELIMITERS: &[char] = &['.', '-', '+', '@', '#', '$', '%', '&'];
const CONSTANT_VARIABLES: &[&str] = &["true", "false", "null", "root", "admin"];

/// Canonical form of a template under the Khan et al. correction rules: whitespace runs
/// folded, named wildcards (`<:IP:>`) as `<*>`, path-like strings, digit-only tokens, booleans
/// and default user strings as `<*>`, words glued to a variable as `<*>`, and `<*>.<*>`,
/// `<*><*>`, `#<*>#`, `<*>:<*>` merged.
pub fn canonical_template(template: &str) -> String {
    let spaced = template.split_whitespace().collect::<Vec<_>>().join(" ");
    let unnamed = replace_named_wildcards(&spaced);
    let no_paths = map_pieces(&unnamed, PATH_DELIMITERS, |piece| {
        is_absolute_path(piece).then_some("<*>")
    });
    let mut out = map_pieces(&no_paths, &all_token_delimiters(), |piece| {
        let lower = piece.to_ascii_lowercase();
        let variable = CONSTANT_VARIABLES.contains(&lower.as_str())
            || (!piece.is_empty() && piece.bytes().all(|b| b.is_ascii_digit()))
            || (piece.contains("<*>") && !piece.contains('/'));
        variable.then_some("<*>")
    });
    for (from, to) in [
        ("<*>.<*>", "<*>"),
        ("<*><*>", "<*>"),
        ("#<*>#", "<*>"),
        ("<*>:<*>", "<*>"),
    ] {
        while out.contains(from) {
            out = out.replace(from, to);
        }
    }
    out
}

fn all_token_delimiters() -> Vec<char> {
    PATH_DELIMITERS
        .iter()
        .chain(EXTRA_TOKEN_DELIMITERS)
        .copied()
        .collect()
}

/// Splits on `delims` (kept), replaces pieces for which `f` answers, and joins back.
fn map_pieces(s: &str, delims: &[char], f: impl Fn(&str) -> Option<&'static str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if delims.contains(&c) {
            push_piece(&mut out, &s[start..i], &f);
            out.push(c);
            start = i + c.len_utf8();
        }
    }
    push_piece(&mut out, &s[start..], &f);
    out
}

fn push_piece(out: &mut String, piece: &str, f: &impl Fn(&str) -> Option<&'static str>) {
    match f(piece) {
        Some(r) => out.push_str(r),
        None => out.push_str(piece),
    }
}

/// `^(/[^/]+)+$`
fn is_absolute_path(piece: &str) -> bool {
    piece.starts_with('/') && piece.len() > 1 && piece[1..].split('/').all(|p| !p.is_empty())
}

fn replace_named_wildcards(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("<:") {
        let after = &rest[start + 2..];
        match after.find(":>") {
            Some(end)
                if after[..end]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                out.push_str(&rest[..start]);
                out.push_str("<*>");
                rest = &after[end + 2..];
            }
            _ => {
                out.push_str(&rest[..start + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn canonical_rules() {
        assert_eq!(canonical_template("blk_<*>  done"), "<*> done");
        assert_eq!(canonical_template("took 15 ms"), "took <*> ms");
        assert_eq!(
            canonical_template("from <:IP:> at <*>.<*>"),
            "from <*> at <*>"
        );
        assert_eq!(canonical_template("open /etc/hosts now"), "open <*> now");
        assert_eq!(canonical_template("flag=true"), "flag=<*>");
        assert_eq!(canonical_template("peer <*>:<*> closed"), "peer <*> closed");
        assert_eq!(
            canonical_template("<*>@<*>/<*>/<*>:<*>:<*>:<*>.<*> x"),
            "<*>@<*>/<*>/<*> x"
        );
        assert_eq!(canonical_template("(HWID=<*>)"), "(HWID=<*>)");
        assert_eq!(canonical_template("jk2_init() ok"), "jk2_init() ok");
        assert_eq!(canonical_template("a <: b"), "a <: b");
    }

    #[test]
    fn perfect_parse_scores_one() {
        let truth = s(&["a <*>", "a <*>", "b"]);
        let pred = p(&[("1", "a <*>"), ("1", "a <*>"), ("2", "b")]);
        let acc = evaluate(&truth, &pred);
        assert_eq!((acc.ga, acc.pa, acc.fga, acc.fta), (1.0, 1.0, 1.0, 1.0));
    }

    #[test]
    fn hand_computed_partial_parse() {
        // Truth groups: {0,1} "a <*>", {2} "b", {3} "c".
        // Predicted: {0} , {1}, {2,3}: no group is exactly right.
        let truth = s(&["a <*>", "a <*>", "b", "c"]);
        let pred = p(&[("x", "a 1"), ("y", "a <*>"), ("z", "b"), ("z", "b")]);
        let acc = evaluate(&truth, &pred);
        assert_eq!(acc.ga, 0.0);
        // Lines 1 and 2 have correct templates ("a 1" canonicalises to "a <*>" too).
        assert_eq!(acc.pa, 0.75);
        assert_eq!(acc.fga, 0.0);

        // Predicted {0,1} correct with template "a <*>", {2} correct but wrong template, {3}.
        let pred = p(&[("x", "a <*>"), ("x", "a <*>"), ("y", "bb"), ("z", "c")]);
        let acc = evaluate(&truth, &pred);
        assert_eq!(acc.ga, 1.0);
        assert_eq!(acc.pa, 0.75);
        assert_eq!(acc.fga, 1.0);
        // 2 of 3 groups have correct templates: P = R = 2/3.
        assert!((acc.fta - 2.0 / 3.0).abs() < 1e-12);
    }
}

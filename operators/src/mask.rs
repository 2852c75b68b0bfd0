//! Variable masking: ordered regex masks turn a message into whitespace tokens whose variable
//! parts are replaced by wildcards, keeping the masked values as parameters.
//!
//! Masks apply to tokens (whitespace-separated), so a variable never swallows its neighbours.
//! All masks are compiled once into a single alternation (earlier masks win at the same
//! position): masking a token is one left-to-right regex scan, never a per-line compile.

use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Wildcard written in templates for a masked or generalised value.
pub const WILDCARD: &str = "<*>";

/// The default masks shipped in `configs/masks.toml`.
pub const DEFAULT_MASKS_TOML: &str = include_str!("../../configs/masks.toml");

/// Errors building a [`Masker`].
#[derive(Debug, Error)]
pub enum MaskError {
    #[error("mask config is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("mask `{name}` has an invalid regex: {source}")]
    Regex {
        name: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("mask `{0}` matches the empty string; every mask must consume at least one character")]
    MatchesEmpty(String),
}

/// One named mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskRule {
    pub name: String,
    pub regex: String,
}

/// An ordered list of masks, as written in `configs/masks.toml` (`[[mask]]` tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskConfig {
    #[serde(rename = "mask", default)]
    pub masks: Vec<MaskRule>,
}

impl Default for MaskConfig {
    fn default() -> Self {
        // The shipped file is covered by tests, so failing here is a build defect.
        Self::from_toml(DEFAULT_MASKS_TOML).expect("configs/masks.toml is valid")
    }
}

impl MaskConfig {
    pub fn from_toml(text: &str) -> Result<Self, MaskError> {
        Ok(toml::from_str(text)?)
    }
}

/// A message split into whitespace tokens, with masked variable parts.
///
/// Spans are byte ranges into `text` (the original message) and `masked` (the masked tokens,
/// concatenated). Kept as two strings and span lists so one message costs a handful of
/// allocations, which matters at a million lines per second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedMessage {
    pub text: String,
    /// Original token ranges in `text`.
    pub spans: Vec<(u32, u32)>,
    /// Masked tokens, back to back.
    pub masked: String,
    /// Masked token ranges in `masked`.
    pub masked_spans: Vec<(u32, u32)>,
    /// Masked values: (token index, start, end) ranges in `text`, in order.
    pub values: Vec<(u32, u32, u32)>,
}

impl MaskedMessage {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The masked form of token `i` (e.g. `<*>` or `(HWID=<*>)`).
    pub fn masked_token(&self, i: usize) -> &str {
        let (s, e) = self.masked_spans[i];
        &self.masked[s as usize..e as usize]
    }

    /// The original text of token `i`.
    pub fn original_token(&self, i: usize) -> &str {
        let (s, e) = self.spans[i];
        &self.text[s as usize..e as usize]
    }

    /// Iterates the masked tokens.
    pub fn masked_tokens(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.masked_token(i))
    }

    /// The masked values inside token `i`.
    pub fn values_of(&self, i: usize) -> impl Iterator<Item = &str> + '_ {
        let i = i as u32;
        self.values
            .iter()
            .filter(move |(t, _, _)| *t == i)
            .map(|&(_, s, e)| &self.text[s as usize..e as usize])
    }

    /// True when token `i` is a variable as a whole.
    pub fn is_variable(&self, i: usize) -> bool {
        is_wildcard(self.masked_token(i))
    }
}

/// True for `<*>` and named wildcards such as `<:IP:>`.
pub fn is_wildcard(token: &str) -> bool {
    token == WILDCARD || (token.len() > 4 && token.starts_with("<:") && token.ends_with(":>"))
}

/// Runs of at least this many whole-variable tokens collapse into one: long runs are
/// variable-length lists (`0x1 0x2 0x3 ...`), while a pair (`<path> <block>`) is usually two
/// distinct fields. Measured on the Loghub samples: 3 beats both 2 and no collapsing.
const COLLAPSE_MIN_RUN: usize = 3;

/// Compiled masks.
#[derive(Debug, Clone)]
pub struct Masker {
    combined: Option<Regex>,
    singles: Vec<(String, Regex)>,
    named: bool,
    collapse_runs: bool,
}

impl Masker {
    /// Compiles `config`; `named` writes `<:NAME:>` instead of `<*>`; `collapse_runs` merges
    /// runs of three or more whole-variable tokens (`0x1 0x2 0x3`) into one, so
    /// variable-length lists share a template.
    pub fn new(config: &MaskConfig, named: bool, collapse_runs: bool) -> Result<Self, MaskError> {
        let mut singles = Vec::with_capacity(config.masks.len());
        for rule in &config.masks {
            let re = compile(&rule.regex).map_err(|e| MaskError::Regex {
                name: rule.name.clone(),
                source: Box::new(e),
            })?;
            if re.is_match(b"") {
                return Err(MaskError::MatchesEmpty(rule.name.clone()));
            }
            singles.push((rule.name.clone(), re));
        }
        let combined = if singles.is_empty() {
            None
        } else {
            let alternation = config
                .masks
                .iter()
                .map(|r| format!("(?:{})", r.regex))
                .collect::<Vec<_>>()
                .join("|");
            Some(compile(&alternation).map_err(|e| MaskError::Regex {
                name: "<combined>".to_owned(),
                source: Box::new(e),
            })?)
        };
        Ok(Masker {
            combined,
            singles,
            named,
            collapse_runs,
        })
    }

    /// The shipped default masks, wildcards as `<*>`, collapsing variable runs.
    pub fn default_masks() -> Self {
        Self::new(&MaskConfig::default(), false, true).expect("default masks compile")
    }

    /// Masks `message` into tokens.
    pub fn mask(&self, message: &str) -> MaskedMessage {
        self.mask_owned(message.to_owned())
    }

    /// Masks `message` into tokens, taking ownership of the text to avoid a copy.
    pub fn mask_owned(&self, text: String) -> MaskedMessage {
        let mut out = MaskedMessage {
            text: String::new(),
            spans: Vec::with_capacity(16),
            masked: String::with_capacity(text.len()),
            masked_spans: Vec::with_capacity(16),
            values: Vec::new(),
        };
        let message = text.as_str();
        // One scan of the whole message (cheaper than one per token); matches are cut at token
        // boundaries below, so a mask never spans two tokens.
        let matches: Vec<(usize, usize)> = match &self.combined {
            Some(re) => re
                .find_iter(message.as_bytes())
                .map(|m| char_bounds(message, m.start(), m.end()))
                .map(|(s, e)| detach_glued_sign(message, s, e))
                .filter(|(s, e)| s < e)
                .collect(),
            None => Vec::new(),
        };
        let mut next_match = 0;
        // Length of the current run of whole-variable tokens.
        let mut run = 0;
        for (start, end) in token_spans(message) {
            while next_match < matches.len() && matches[next_match].1 <= start {
                next_match += 1;
            }
            let variable = self.push_token(&mut out, message, start, end, &matches[next_match..]);
            run = if variable { run + 1 } else { 0 };
            if self.collapse_runs && run >= COLLAPSE_MIN_RUN {
                // The run reached the minimum: fold it into one token, then keep folding.
                let merges = if run == COLLAPSE_MIN_RUN { run - 1 } else { 1 };
                for _ in 0..merges {
                    merge_last_two(&mut out);
                }
            }
        }
        out.text = text;
        out
    }

    /// Appends one token, masking the parts covered by `matches`; returns true when the token
    /// is a variable as a whole, a candidate for run collapsing. (Collapsing tokens that carry
    /// punctuation too, like `<*>).`, measured worse: it swallows sentence structure.)
    fn push_token(
        &self,
        out: &mut MaskedMessage,
        message: &str,
        start: usize,
        end: usize,
        matches: &[(usize, usize)],
    ) -> bool {
        let token_index = out.spans.len() as u32;
        let masked_start = out.masked.len();
        let mut cursor = start;
        for &(ms, me) in matches {
            if ms >= end {
                break;
            }
            let (ms, me) = (ms.max(start), me.min(end));
            if me <= ms {
                continue;
            }
            out.masked.push_str(&message[cursor..ms]);
            self.push_wildcard(&mut out.masked, &message[ms..me]);
            out.values.push((token_index, ms as u32, me as u32));
            cursor = me;
        }
        out.masked.push_str(&message[cursor..end]);
        out.spans.push((start as u32, end as u32));
        out.masked_spans
            .push((masked_start as u32, out.masked.len() as u32));
        let (ms, me) = out.masked_spans[token_index as usize];
        is_wildcard(&out.masked[ms as usize..me as usize])
    }

    fn push_wildcard(&self, masked: &mut String, value: &str) {
        if !self.named {
            masked.push_str(WILDCARD);
            return;
        }
        let name = self
            .singles
            .iter()
            .find(|(_, re)| re.find(value.as_bytes()).is_some_and(|m| m.start() == 0))
            .map_or("VAR", |(name, _)| name.as_str());
        masked.push_str("<:");
        masked.push_str(name);
        masked.push_str(":>");
    }
}

/// Masks match bytes with ASCII classes (`\d`, `\w`, `\s` are ASCII): far smaller automata
/// than the Unicode ones, which keeps the lazy DFA from rebuilding states on every line.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).unicode(false).build()
}

/// Widens a byte match to char boundaries, so a class that matched part of a multi-byte
/// character never splits it.
fn char_bounds(s: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    while start > 0 && !s.is_char_boundary(start) {
        start -= 1;
    }
    while end < s.len() && !s.is_char_boundary(end) {
        end += 1;
    }
    (start, end)
}

/// A leading `-`/`+` right after a letter or digit is a separator (`node-246`), not a sign.
fn detach_glued_sign(message: &str, start: usize, end: usize) -> (usize, usize) {
    let bytes = message.as_bytes();
    let signed = matches!(bytes.get(start), Some(b'-' | b'+'));
    let glued = start > 0 && bytes[start - 1].is_ascii_alphanumeric();
    if signed && glued {
        (start + 1, end)
    } else {
        (start, end)
    }
}

/// Merges the last two tokens of `out` (both variables) into one spanning both: the first
/// token's text before its wildcard, one wildcard, the last token's text after its wildcard.
fn merge_last_two(out: &mut MaskedMessage) {
    let n = out.spans.len();
    if n < 2 {
        return;
    }
    let last = out.spans[n - 1];
    out.spans.pop();
    out.spans[n - 2].1 = last.1;
    let (ps, pe) = out.masked_spans[n - 2];
    let (ls, le) = out.masked_spans[n - 1];
    let prev = &out.masked[ps as usize..pe as usize];
    let tail = &out.masked[ls as usize..le as usize];
    let head_end = prev.find('<').unwrap_or(prev.len());
    let tail_start = tail.rfind('>').map_or(0, |i| i + 1);
    let merged = format!("{}{}{}", &prev[..head_end], WILDCARD, &tail[tail_start..]);
    out.masked.truncate(ps as usize);
    out.masked.push_str(&merged);
    out.masked_spans.pop();
    out.masked_spans[n - 2] = (ps, out.masked.len() as u32);
    // All values of the two tokens become one covering both.
    let token = (n - 2) as u32;
    let first = out.values.iter().position(|v| v.0 >= token);
    if let Some(first) = first {
        let end = out.values.last().map_or(0, |v| v.2);
        out.values[first] = (token, out.values[first].1, end);
        out.values.truncate(first + 1);
    }
}

/// Byte ranges of the whitespace-separated tokens of `s`.
pub fn token_spans(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() && is_space(bytes[i], s, i) {
            i += char_len(bytes[i]);
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i;
        while i < bytes.len() && !is_space(bytes[i], s, i) {
            i += char_len(bytes[i]);
        }
        Some((start, i))
    })
}

fn is_space(b: u8, s: &str, i: usize) -> bool {
    if b.is_ascii() {
        b.is_ascii_whitespace()
    } else {
        s[i..].chars().next().is_some_and(char::is_whitespace)
    }
}

fn char_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(m: &Masker, s: &str) -> Vec<String> {
        m.mask(s).masked_tokens().map(str::to_owned).collect()
    }

    fn first_mask_name(m: &Masker, value: &str) -> Option<String> {
        m.singles
            .iter()
            .find(|(_, re)| {
                re.find(value.as_bytes())
                    .is_some_and(|x| x.start() == 0 && x.end() == value.len())
            })
            .map(|(n, _)| n.clone())
    }

    #[test]
    fn default_masks_cover_common_variables() {
        let m = Masker::default_masks();
        let cases = [
            ("http://example.com/a?b=1", "URI"),
            ("john.doe@example.org", "EMAIL"),
            ("123e4567-e89b-12d3-a456-426614174000", "UUID"),
            ("2016-09-28", "TIMESTAMP"),
            ("04:30:31.455", "TIME"),
            ("10.10.34.11:45307", "IP"),
            ("/10.10.34.11", "IP"),
            ("fe80:0:0:0:202:b3ff:fe1e:8329", "IPV6"),
            ("00:1a:2b:3c:4d:5e", "MAC"),
            ("host-1.example.com:8080", "HOSTPORT"),
            ("/etc/httpd/conf/workers2.properties", "PATH"),
            ("C:\\Windows\\winsxs\\core.dll", "PATH"),
            ("0x7fed806eb5d", "HEX"),
            ("81aa0003", "HEX"),
            ("blk_-6952295868487656571", "ID"),
            ("appattempt_1445144423722_0020_000001", "ID"),
            ("12345", "NUM"),
            ("-3.14", "NUM"),
        ];
        for (value, name) in cases {
            assert_eq!(first_mask_name(&m, value).as_deref(), Some(name), "{value}");
        }
    }

    #[test]
    fn words_with_digits_inside_stay_constant() {
        let m = Masker::default_masks();
        assert_eq!(
            masked(&m, "jk2_init() Found child 6725 in slot L3 alt0"),
            [
                "jk2_init()",
                "Found",
                "child",
                "<*>",
                "in",
                "slot",
                "L3",
                "alt0"
            ]
        );
    }

    #[test]
    fn partial_masks_keep_surrounding_text_and_values() {
        let m = Masker::default_masks();
        let mm = m.mask("state (HWID=1973) node-246");
        assert_eq!(mm.masked_token(1), "(HWID=<*>)");
        assert_eq!(mm.masked_token(2), "node-<*>");
        assert_eq!(mm.values_of(1).collect::<Vec<_>>(), ["1973"]);
        assert_eq!(mm.values_of(2).collect::<Vec<_>>(), ["246"]);
        assert!(!mm.is_variable(1));
    }

    #[test]
    fn runs_of_three_or_more_whole_variables_collapse_into_one_token() {
        let m = Masker::default_masks();
        let mm = m.mask("(stack @0x1 0x7fef9fb9b6d 0xff83e97c 0xff83d799 0x1f) done");
        assert_eq!(
            mm.masked_tokens().collect::<Vec<_>>(),
            ["(stack", "@<*>", "<*>", "<*>)", "done"]
        );
        assert_eq!(mm.original_token(2), "0x7fef9fb9b6d 0xff83e97c 0xff83d799");
        assert_eq!(
            mm.values_of(2).collect::<Vec<_>>(),
            ["0x7fef9fb9b6d 0xff83e97c 0xff83d799"]
        );
        // A pair stays two fields; a fourth variable joins an already folded run.
        assert_eq!(m.mask("alloc /a/b blk_1").len(), 3);
        let long = m.mask("ids 1 2 3 4 5 end");
        assert_eq!(
            long.masked_tokens().collect::<Vec<_>>(),
            ["ids", "<*>", "end"]
        );
        assert_eq!(long.values_of(1).collect::<Vec<_>>(), ["1 2 3 4 5"]);
        let plain = Masker::new(&MaskConfig::default(), false, false).unwrap();
        assert_eq!(plain.mask("a 1 2 3 b").len(), 5);
    }

    #[test]
    fn named_masks_write_the_mask_name() {
        let m = Masker::new(&MaskConfig::default(), true, true).unwrap();
        assert_eq!(
            masked(&m, "from 10.0.0.1 took 15 ms"),
            ["from", "<:IP:>", "took", "<:NUM:>", "ms"]
        );
    }

    #[test]
    fn date_and_time_tokens_mask_separately() {
        let m = Masker::default_masks();
        let mm = m.mask("at 2016-09-28 04:30:30, ok");
        assert_eq!(
            mm.masked_tokens().collect::<Vec<_>>(),
            ["at", "<*>", "<*>,", "ok"]
        );
    }

    #[test]
    fn unicode_and_odd_whitespace_do_not_panic() {
        let m = Masker::default_masks();
        let mm = m.mask("  größe\u{a0}42 \t ü 7é  ");
        assert_eq!(
            mm.masked_tokens().collect::<Vec<_>>(),
            ["größe", "<*>", "ü", "<*>é"]
        );
        assert!(m.mask("").is_empty());
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let bad = MaskConfig {
            masks: vec![MaskRule {
                name: "BROKEN".into(),
                regex: "(".into(),
            }],
        };
        let err = Masker::new(&bad, false, true).unwrap_err().to_string();
        assert!(err.contains("BROKEN"), "{err}");
        let empty = MaskConfig {
            masks: vec![MaskRule {
                name: "EMPTY".into(),
                regex: "x*".into(),
            }],
        };
        assert!(matches!(
            Masker::new(&empty, false, true),
            Err(MaskError::MatchesEmpty(_))
        ));
        assert!(MaskConfig::from_toml("[[mask]]\nname=1").is_err());
    }
}

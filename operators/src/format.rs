//! Log header formats: splitting a raw line into named header fields and the message.
//!
//! A format such as `<Date> <Time> <Level> <Component>: <Content>` means what logpai/logparser's
//! generated regex means (fields lazy `.*?`, space runs `\s+`, whole trimmed line, leftmost-first
//! captures), but it is compiled once into a small program of literal / whitespace-run / field
//! steps run by a backtracking matcher that jumps from field to field with byte scans: on lines
//! of the right format that is a handful of steps, where regex captures would dominate the
//! pipeline. Lines that would backtrack a lot fall back to a table of which states can still
//! match, so no line costs more than O(steps × length). One deliberate difference from the
//! regex: fields also match line breaks, so a multi-line record keeps its whole message.

use crate::level::Level;
use crate::model::{FieldNames, LogRecord, RESULT_FIELDS};
use crate::swar;
use crate::text::trim_ends;
use crate::timestamp;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use thiserror::Error;

/// The field holding the message.
pub const CONTENT: &str = "Content";

/// The named formats of `configs/formats.toml`, built in so a name is enough in a config.
const BUILTIN_FORMATS_TOML: &str = include_str!("../../configs/formats.toml");

/// Whether a header field would shadow a record key (and so serialize twice).
fn is_reserved(name: &str) -> bool {
    RESULT_FIELDS.contains(&name) || name == "format_mismatch"
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("format `{spec}` has no `<Content>` field: add one where the message starts")]
    MissingContent { spec: String },
    #[error(
        "format `{spec}`: `<` at byte {pos} is never closed by `>` (write `\\<` for a literal `<`)"
    )]
    UnclosedField { spec: String, pos: usize },
    #[error("format `{spec}`: empty field name `<>` at byte {pos}")]
    EmptyFieldName { spec: String, pos: usize },
    #[error(
        "format `{spec}`: {ch:?} at byte {pos} cannot be part of a field name \
         (use A-Z, a-z, 0-9 and _; write `\\<` for a literal `<`)"
    )]
    InvalidFieldName { spec: String, pos: usize, ch: char },
    #[error("format `{spec}`: field `<{name}>` at byte {pos} appears twice")]
    DuplicateField {
        spec: String,
        pos: usize,
        name: String,
    },
    #[error("format `{spec}`: unbalanced group at byte {pos}: {problem}")]
    UnbalancedGroup {
        spec: String,
        pos: usize,
        problem: &'static str,
    },
    #[error(
        "format `{spec}`: `<Content>` at byte {pos} is inside an optional group, \
         but every line needs a message"
    )]
    OptionalContent { spec: String, pos: usize },
    #[error("format `{spec}`: `\\` at byte {pos} ends the format and escapes nothing")]
    DanglingEscape { spec: String, pos: usize },
    #[error("no format given: a format set needs at least one format")]
    NoFormats,
    #[error("unknown format name `{name}` (known: {known}); a format string needs `<Content>`")]
    UnknownName { name: String, known: String },
}

/// One step of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Literal text, never empty.
    Lit(Box<str>),
    /// One or more whitespace characters, longest first (`\s+`).
    Ws,
    /// A field, shortest first (`.*?`), into this capture slot.
    Field(usize),
    /// An optional group: try the steps after this one, else clear the group's slots
    /// `first_slot..end_slot` and go on at `skip`.
    Split {
        skip: usize,
        first_slot: usize,
        end_slot: usize,
    },
    End,
}

/// A compiled header format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFormat {
    spec: String,
    ops: Vec<Op>,
    names: Vec<Box<str>>,
    content_slot: usize,
    /// Slots of the fields `to_record` interprets, found once here instead of per line.
    roles: Roles,
    /// What any matching line contains, in order (see [`LogFormat::may_match`]).
    segments: Vec<Vec<Part>>,
    /// `ops` specialised for [`LogFormat::match_first_choices`], one per op.
    steps: Vec<Step>,
}

/// The header of a matched line, borrowing from the line and the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The `<Content>` field: the message.
    pub content: &'a str,
    /// The other fields as (name, value), in format order; fields of an optional group that
    /// did not match are left out.
    pub fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Header<'a> {
    /// The value of field `name` (exact name).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// The value of field `name`, compared ASCII case-insensitively.
    pub fn get_ignore_case(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }
}

/// Capture of one field: byte range in the trimmed line, `None` when not matched.
type Span = Option<(usize, usize)>;

impl LogFormat {
    /// Compiles a format string (see the module docs and `configs/formats.toml` for the syntax).
    pub fn parse(spec: &str) -> Result<LogFormat, FormatError> {
        Compiler::new(spec).compile()
    }

    /// The format string this was compiled from.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Field names in format order, `Content` included.
    pub fn field_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.names.iter().map(|n| &**n)
    }

    /// Splits `line` (leading and trailing whitespace ignored) into header fields and message;
    /// `None` when the line does not have this format.
    pub fn apply<'a>(&'a self, line: &'a str) -> Option<Header<'a>> {
        with_spans(self.names.len(), |spans| {
            let line = self.match_into(line, spans)?;
            Some(
                Matched {
                    format: self,
                    line,
                    spans,
                }
                .header(),
            )
        })
    }

    /// Matches the trimmed `line`, filling `spans` (one per field); returns the trimmed line.
    fn match_into<'a>(&self, line: &'a str, spans: &mut [Span]) -> Option<&'a str> {
        let line = trim_ends(line, char::is_whitespace);
        if self.match_first_choices(line, spans) {
            return Some(line);
        }
        let budget = STEP_BUDGET_BASE + line.len() / STEP_BUDGET_BYTES_PER_STEP;
        self.match_with_budget(line, spans, budget)
    }

    /// [`LogFormat::match_into`] on a trimmed line with a given step budget (tests use 0 to
    /// exercise the feasibility table).
    fn match_with_budget<'a>(
        &self,
        line: &'a str,
        spans: &mut [Span],
        budget: usize,
    ) -> Option<&'a str> {
        if !self.may_match(line) {
            return None;
        }
        spans.fill(None);
        let mut matcher = Matcher {
            ops: &self.ops,
            line,
            spans,
            steps: 0,
            budget,
            feasible: None,
        };
        let found = match matcher.run(0, 0) {
            Ok(found) => found,
            Err(Exhausted) => {
                // Heavy backtracking: tabulate which (step, position) states can still reach
                // the end, then walk the same preference order through feasible states only.
                matcher.feasible = Some(feasibility(&self.ops, line));
                matcher.run(0, 0).unwrap_or(false)
            }
        };
        found.then_some(line)
    }

    /// The match of the trimmed `line` when no step has to be undone: follows the first
    /// choice of every step (a field's first possible end, a whitespace run's longest length,
    /// an optional group taken unless its first step cannot start) and gives up at the first
    /// step that fails. [`Matcher::run`] tries choices in this same order, so a path that
    /// reaches `End` is exactly the match it would find, without its recursion, step counting
    /// and [`LogFormat::may_match`] pass. `false` decides nothing: the caller then runs the
    /// backtracking matcher.
    fn match_first_choices(&self, line: &str, spans: &mut [Span]) -> bool {
        let ops = &self.ops;
        let bytes = line.as_bytes();
        let mut pc = 0;
        let mut pos = 0;
        loop {
            match self.steps.get(pc) {
                None => return false,
                Some(Step::End) => return pos == bytes.len(),
                Some(Step::Lit(lit)) => {
                    let here = match **lit {
                        [byte] => bytes.get(pos) == Some(&byte),
                        _ => starts_with_at(bytes, pos, lit),
                    };
                    if !here {
                        return false;
                    }
                    pos += lit.len();
                    pc += 1;
                }
                Some(Step::Ws) => {
                    let end = scan_whitespace_run_end(line, pos);
                    if end == pos {
                        return false;
                    }
                    pos = end;
                    pc += 1;
                }
                // The first end `Matcher::field` tries. When the next step is what that end was
                // found by, it matches there by construction and is done here too.
                Some(&Step::FieldToEnd(slot)) => {
                    let Some(span) = spans.get_mut(slot) else {
                        return false;
                    };
                    *span = Some((pos, bytes.len()));
                    return true;
                }
                Some(Step::FieldToLit { slot, first, rest }) => {
                    let Some(span) = spans.get_mut(*slot) else {
                        return false;
                    };
                    let Some(at) = scan_lit(bytes, pos, *first, rest) else {
                        return false;
                    };
                    *span = Some((pos, at));
                    pos = at + 1 + rest.len();
                    pc += 2;
                }
                Some(&Step::FieldToWs(first_slot)) => {
                    let mut slot = first_slot;
                    loop {
                        let Some(span) = spans.get_mut(slot) else {
                            return false;
                        };
                        let Some(at) = scan_whitespace(line, pos) else {
                            return false;
                        };
                        *span = Some((pos, at));
                        // An ASCII whitespace byte is a whole character: the run goes on after it.
                        let after = if bytes.get(at).is_some_and(u8::is_ascii) {
                            at + 1
                        } else {
                            at
                        };
                        pos = scan_whitespace_run_end(line, after);
                        pc += 2;
                        // Whitespace-separated fields often come in runs: go on without the
                        // dispatch.
                        match self.steps.get(pc) {
                            Some(&Step::FieldToWs(next)) => slot = next,
                            _ => break,
                        }
                    }
                }
                Some(&Step::Field(slot)) => {
                    let Some(span) = spans.get_mut(slot) else {
                        return false;
                    };
                    let end = (pos..=bytes.len())
                        .find(|&at| line.is_char_boundary(at) && can_start(ops, line, pc + 1, at));
                    let Some(end) = end else {
                        return false;
                    };
                    *span = Some((pos, end));
                    pos = end;
                    pc += 1;
                }
                Some(&Step::Split {
                    skip,
                    first_slot,
                    end_slot,
                }) => {
                    if can_start(ops, line, pc + 1, pos) {
                        pc += 1;
                    } else {
                        // The group fails at its first step, before any choice inside it, so
                        // skipping it is the matcher's next (and only) choice.
                        if let Some(group) = spans.get_mut(first_slot..end_slot) {
                            group.fill(None);
                        }
                        pc = skip;
                    }
                }
            }
        }
    }

    /// Quick rejection (a necessary condition): the literal/whitespace runs outside groups
    /// must occur in order. Each is placed at its earliest end, which never rules out a match.
    fn may_match(&self, line: &str) -> bool {
        let mut from = 0;
        for segment in &self.segments {
            match earliest_segment_end(segment, line, from) {
                Some(end) => from = end,
                None => return false,
            }
        }
        true
    }
}

/// An op as [`LogFormat::match_first_choices`] runs it: a field is fused with the step after
/// it when that step is what the field's first end is found by, so each field costs one
/// dispatch. Indexed like the ops: a fused field skips the next index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Lit(Box<[u8]>),
    Ws,
    /// A field followed by `End`.
    FieldToEnd(usize),
    /// A field followed by a literal: its first byte and the rest.
    FieldToLit {
        slot: usize,
        first: u8,
        rest: Box<[u8]>,
    },
    /// A field followed by a whitespace run.
    FieldToWs(usize),
    /// A field followed by a field or a group: ends found with [`can_start`].
    Field(usize),
    Split {
        skip: usize,
        first_slot: usize,
        end_slot: usize,
    },
    End,
}

fn first_choice_steps(ops: &[Op]) -> Vec<Step> {
    ops.iter()
        .enumerate()
        .map(|(pc, op)| match op {
            Op::Lit(lit) => Step::Lit(lit.as_bytes().into()),
            Op::Ws => Step::Ws,
            &Op::Field(slot) => match ops.get(pc + 1) {
                Some(Op::End) => Step::FieldToEnd(slot),
                Some(Op::Lit(lit)) => match lit.as_bytes().split_first() {
                    Some((&first, rest)) => Step::FieldToLit {
                        slot,
                        first,
                        rest: rest.into(),
                    },
                    None => Step::Field(slot),
                },
                Some(Op::Ws) => Step::FieldToWs(slot),
                _ => Step::Field(slot),
            },
            &Op::Split {
                skip,
                first_slot,
                end_slot,
            } => Step::Split {
                skip,
                first_slot,
                end_slot,
            },
            Op::End => Step::End,
        })
        .collect()
}

/// Runs `f` with `len` capture slots, on the stack for the usual few fields.
fn with_spans<R>(len: usize, f: impl FnOnce(&mut [Span]) -> R) -> R {
    const INLINE: usize = 16;
    if len <= INLINE {
        let mut spans = [None; INLINE];
        f(&mut spans[..len])
    } else {
        f(&mut vec![None; len])
    }
}

/// Slots of the header fields with a meaning for records (names compared case-insensitively).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Roles {
    /// `Level` or `Severity`.
    level: Option<usize>,
    timestamp: Option<usize>,
    datetime: Option<usize>,
    date: Option<usize>,
    time: Option<usize>,
    day: Option<usize>,
    month: Option<usize>,
    /// The fields stored in the header (not `Content`, not a record key), in format order,
    /// their values read from the capture slots: the per-line loop visits only these.
    stored: FieldNames,
    /// The timestamp candidates whose fields all exist in the format, in [`timestamp_of`]'s
    /// order: only these can be present on a line.
    stamps: Vec<Stamp>,
}

/// A timestamp candidate of [`timestamp_of`], by the fields joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Timestamp,
    Datetime,
    DateTime,
    /// `Month Date|Day Time`.
    MonthDateTime,
    DateDayTime,
    Time,
    Date,
}

impl Stamp {
    /// All candidates, first tried first.
    const ALL: [Stamp; 7] = [
        Stamp::Timestamp,
        Stamp::Datetime,
        Stamp::DateTime,
        Stamp::MonthDateTime,
        Stamp::DateDayTime,
        Stamp::Time,
        Stamp::Date,
    ];

    /// Whether the format has every field the candidate needs.
    fn possible(self, roles: &Roles) -> bool {
        let (date, time) = (roles.date.is_some(), roles.time.is_some());
        match self {
            Stamp::Timestamp => roles.timestamp.is_some(),
            Stamp::Datetime => roles.datetime.is_some(),
            Stamp::DateTime => date && time,
            Stamp::MonthDateTime => roles.month.is_some() && (date || roles.day.is_some()) && time,
            Stamp::DateDayTime => date && roles.day.is_some() && time,
            Stamp::Time => time,
            Stamp::Date => date,
        }
    }
}

impl Roles {
    fn of(names: &[Box<str>]) -> Roles {
        let find = |wanted: &str| names.iter().position(|n| n.eq_ignore_ascii_case(wanted));
        let stored = names
            .iter()
            .enumerate()
            .filter(|(_, name)| is_stored(name))
            .map(|(slot, name)| (&**name, slot));
        let mut roles = Roles {
            level: find("level").or_else(|| find("severity")),
            timestamp: find("timestamp"),
            datetime: find("datetime"),
            date: find("date"),
            time: find("time"),
            day: find("day"),
            month: find("month"),
            stored: FieldNames::new(stored),
            stamps: Vec::new(),
        };
        roles.stamps = Stamp::ALL
            .into_iter()
            .filter(|stamp| stamp.possible(&roles))
            .collect();
        roles
    }
}

/// Whether a field goes to the record's header fields: not `Content`, not a record key.
fn is_stored(name: &str) -> bool {
    name != CONTENT && !is_reserved(name)
}

/// A matched line seen through its format, without copying anything.
struct Matched<'a, 's> {
    format: &'a LogFormat,
    line: &'a str,
    spans: &'s [Span],
}

impl<'a> Matched<'a, '_> {
    fn value(&self, slot: usize) -> Option<&'a str> {
        let (start, end) = self.spans.get(slot).copied().flatten()?;
        self.line.get(start..end)
    }

    fn content(&self) -> &'a str {
        self.value(self.format.content_slot).unwrap_or_default()
    }

    /// (name, value) of the matched fields other than `Content`.
    fn fields(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        let names = &self.format.names;
        (0..names.len())
            .filter(|&slot| slot != self.format.content_slot)
            .filter_map(move |slot| Some((&*names[slot], self.value(slot)?)))
    }

    /// The non-empty value of a role's field.
    fn role(&self, slot: Option<usize>) -> Option<&'a str> {
        self.value(slot?).filter(|v| !v.is_empty())
    }

    fn header(&self) -> Header<'a> {
        let mut fields = Vec::with_capacity(self.format.names.len());
        fields.extend(self.fields());
        Header {
            content: self.content(),
            fields,
        }
    }
}

/// Backtracking steps allowed before switching to the feasibility table: 64 plus one per 4
/// bytes of line. Lines of the right format take under 30 steps (Loghub: at most 28), so only
/// lines that would backtrack a lot pay for the table, which then costs about as much as
/// the budget did.
const STEP_BUDGET_BASE: usize = 64;
const STEP_BUDGET_BYTES_PER_STEP: usize = 4;

/// A piece of a run of steps with no field in between: what [`LogFormat::may_match`] checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Ws,
}

/// The runs of literal/whitespace steps outside groups, split at fields and groups. A `Ws`
/// before a `Lit` starting with whitespace also splits, so a `Ws` inside a run always spans
/// its whole whitespace run. Runs without a literal are dropped: nearly every line passes them,
/// so checking them would only cost time.
fn required_segments(ops: &[Op]) -> Vec<Vec<Part>> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    let mut pc = 0;
    while let Some(op) = ops.get(pc) {
        pc += 1;
        match op {
            Op::Lit(lit) => {
                if lit.starts_with(char::is_whitespace) && current.last() == Some(&Part::Ws) {
                    segments.push(std::mem::take(&mut current));
                }
                current.push(Part::Lit(lit.clone()));
            }
            Op::Ws => current.push(Part::Ws),
            Op::Field(_) | Op::End | Op::Split { .. } => {
                if !current.is_empty() {
                    segments.push(std::mem::take(&mut current));
                }
                if let Op::Split { skip, .. } = op {
                    pc = *skip;
                }
            }
        }
    }
    segments.retain(|segment| segment.iter().any(|part| matches!(part, Part::Lit(_))));
    segments
}

/// The smallest end of a match of `segment` starting at or after `from`.
fn earliest_segment_end(segment: &[Part], line: &str, from: usize) -> Option<usize> {
    let mut start = from;
    loop {
        let at = match segment.first()? {
            Part::Lit(lit) => find_lit(line, start, lit)?,
            Part::Ws => next_whitespace(line, start)?,
        };
        if let Some(end) = segment_end_at(segment, line, at) {
            return Some(end);
        }
        start = at + char_len_at(line, at);
    }
}

/// The end of `segment` matched at `at`: inner whitespace runs whole, a trailing one a
/// single character (the earliest end).
fn segment_end_at(segment: &[Part], line: &str, at: usize) -> Option<usize> {
    let mut pos = at;
    for (i, part) in segment.iter().enumerate() {
        match part {
            Part::Lit(lit) => {
                if !line.as_bytes().get(pos..)?.starts_with(lit.as_bytes()) {
                    return None;
                }
                pos += lit.len();
            }
            Part::Ws => {
                let first = whitespace_len_at(line, pos);
                if first == 0 {
                    return None;
                }
                pos = if i + 1 == segment.len() {
                    pos + first
                } else {
                    whitespace_run_end(line, pos)
                };
            }
        }
    }
    Some(pos)
}

/// Byte length of the whitespace character at `pos`, 0 if there is none (or `pos` is not a
/// character boundary).
fn whitespace_len_at(line: &str, pos: usize) -> usize {
    match line.as_bytes().get(pos) {
        Some(b'\t'..=b'\r' | b' ') => 1,
        Some(b) if *b >= 0x80 => line
            .get(pos..)
            .and_then(|rest| rest.chars().next())
            .filter(|c| c.is_whitespace())
            .map_or(0, char::len_utf8),
        _ => 0,
    }
}

fn whitespace_run_end(line: &str, mut pos: usize) -> usize {
    loop {
        match whitespace_len_at(line, pos) {
            0 => return pos,
            len => pos += len,
        }
    }
}

/// Bytes that may start a whitespace character: ASCII whitespace and UTF-8 lead bytes.
const MAY_START_WHITESPACE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b, 0x09..=0x0D | 0x20) || b >= 0xC0;
        b += 1;
    }
    table
};

/// The first whitespace character at or after `from`.
fn next_whitespace(line: &str, from: usize) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut start = from;
    loop {
        let offset = bytes
            .get(start..)?
            .iter()
            .position(|&b| MAY_START_WHITESPACE[usize::from(b)])?;
        let at = start + offset;
        if whitespace_len_at(line, at) > 0 {
            return Some(at);
        }
        start = at + 1;
    }
}

/// The first occurrence of `lit` (non-empty) at or after `from`: a byte scan for its first
/// byte, cheaper than `str::find`'s searcher set-up on the short literals of formats.
fn find_lit(line: &str, from: usize, lit: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let needle = lit.as_bytes();
    let first = *needle.first()?;
    let mut start = from;
    while let Some(offset) = bytes.get(start..)?.iter().position(|&b| b == first) {
        let at = start + offset;
        if bytes[at..].starts_with(needle) {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

/// Whether `lit` occurs in `bytes` at `pos`.
fn starts_with_at(bytes: &[u8], pos: usize, lit: &[u8]) -> bool {
    // A byte loop: formats' literals are a few bytes, shorter than a `memcmp` call.
    let here = pos
        .checked_add(lit.len())
        .and_then(|end| bytes.get(pos..end));
    here.is_some_and(|here| here.iter().zip(lit).all(|(a, b)| a == b))
}

/// The position of the first byte of `bytes` from `from` that `flags` flags (in a word, as
/// the `swar` functions do) or, in the last bytes short of a word, that `wanted` accepts.
#[inline]
fn first_candidate(
    bytes: &[u8],
    from: usize,
    flags: impl Fn(u64) -> u64,
    wanted: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut start = from;
    // Words while a whole one is left: the bound is checked once per word, not per load.
    let words_end = bytes.len().saturating_sub(7);
    while start < words_end {
        let word = swar::word_at(bytes, start)?;
        let flagged = flags(word);
        if flagged != 0 {
            return Some(start + swar::first_flagged(flagged));
        }
        start += 8;
    }
    Some(start + bytes.get(start..)?.iter().position(|&b| wanted(b))?)
}

/// The same as [`find_lit`] for the literal `first` then `rest`, eight bytes per step:
/// fields are often longer than the few instructions a word costs.
fn scan_lit(bytes: &[u8], from: usize, first: u8, rest: &[u8]) -> Option<usize> {
    let mut start = from;
    loop {
        let at = first_candidate(
            bytes,
            start,
            |word| swar::equal(word, first),
            |b| b == first,
        )?;
        // Formats' literals are mostly one byte: then the scan alone decides.
        if rest.is_empty() || starts_with_at(bytes, at + 1, rest) {
            return Some(at);
        }
        start = at + 1;
    }
}

/// The same as [`next_whitespace`], eight bytes per step.
fn scan_whitespace(line: &str, from: usize) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut start = from;
    loop {
        // Candidates: bytes below 0x21 (ASCII whitespace among them) or from 0x80, a superset
        // of `MAY_START_WHITESPACE`: `below(word, 0x21) | non_ascii(word)` in three operations
        // (the lowest flag is exact: no byte below it borrows).
        let candidate =
            |word: u64| (word.wrapping_sub(swar::splat(0x21)) | word) & swar::splat(0x80);
        let at = first_candidate(bytes, start, candidate, |b| {
            MAY_START_WHITESPACE[usize::from(b)]
        })?;
        if is_whitespace_at(line, at) {
            return Some(at);
        }
        start = at + 1;
    }
}

/// `whitespace_len_at(line, pos) > 0`, with ASCII decided inline.
#[inline]
fn is_whitespace_at(line: &str, pos: usize) -> bool {
    match line.as_bytes().get(pos) {
        Some(b'\t'..=b'\r' | b' ') => true,
        // A UTF-8 continuation byte starts no character (`scan_whitespace` meets them).
        Some(0x80..=0xBF) => false,
        Some(b) if *b >= 0x80 => whitespace_len_at(line, pos) > 0,
        _ => false,
    }
}

/// The same as [`whitespace_run_end`], with ASCII decided inline: formats' separators are
/// mostly single spaces.
#[inline]
fn scan_whitespace_run_end(line: &str, mut pos: usize) -> usize {
    let bytes = line.as_bytes();
    loop {
        match bytes.get(pos) {
            Some(b'\t'..=b'\r' | b' ') => pos += 1,
            Some(b) if *b >= 0x80 => match whitespace_len_at(line, pos) {
                0 => return pos,
                len => pos += len,
            },
            _ => return pos,
        }
    }
}

/// Byte length of the character at `pos` (1 past the end, to always make progress).
fn char_len_at(line: &str, pos: usize) -> usize {
    line.get(pos..)
        .and_then(|rest| rest.chars().next())
        .map_or(1, char::len_utf8)
}

/// Per (step, position): whether the steps from `pc` can match `line[pos..]`. One byte per
/// cell: it only exists for lines that defeated the step budget.
struct Feasibility {
    cells: Vec<bool>,
    width: usize,
}

impl Feasibility {
    fn get(&self, pc: usize, pos: usize) -> bool {
        let i = pc.saturating_mul(self.width).saturating_add(pos);
        self.cells.get(i).copied().unwrap_or(false)
    }
}

/// Fills the table backwards from `End`, one step (row) at a time: O(steps × line length).
fn feasibility(ops: &[Op], line: &str) -> Feasibility {
    let bytes = line.as_bytes();
    let n = bytes.len();
    let width = n + 1;
    let whitespace: Vec<usize> = (0..n).map(|pos| whitespace_len_at(line, pos)).collect();
    // One spare all-false row after the last step.
    let mut cells = vec![false; (ops.len() + 1).saturating_mul(width)];
    for (pc, op) in ops.iter().enumerate().rev() {
        let (head, tail) = cells.split_at_mut((pc + 1) * width);
        let row = &mut head[pc * width..];
        let next = &tail[..width];
        match op {
            Op::End => row[n] = true,
            Op::Lit(lit) => {
                for pos in 0..=n.saturating_sub(lit.len()) {
                    row[pos] = next[pos + lit.len()] && bytes[pos..].starts_with(lit.as_bytes());
                }
            }
            Op::Field(_) => {
                let mut reachable = false;
                for pos in (0..=n).rev() {
                    if line.is_char_boundary(pos) {
                        reachable |= next[pos];
                        row[pos] = reachable;
                    }
                }
            }
            Op::Ws => {
                for pos in (0..n).rev() {
                    let len = whitespace[pos];
                    if len > 0 {
                        row[pos] = next[pos + len] || row[pos + len];
                    }
                }
            }
            Op::Split { skip, .. } => {
                let skipped = skip
                    .checked_sub(pc + 1)
                    .and_then(|rows| tail.get(rows * width..rows * width + width));
                if let Some(skipped) = skipped {
                    for pos in 0..=n {
                        row[pos] = next[pos] || skipped[pos];
                    }
                }
            }
        }
    }
    Feasibility { cells, width }
}

/// The step budget ran out.
struct Exhausted;

/// One match attempt with the leftmost-first (backtracking) semantics of the equivalent regex:
/// fields shortest first, whitespace runs longest first, optional groups taken if possible.
struct Matcher<'m> {
    ops: &'m [Op],
    line: &'m str,
    spans: &'m mut [Span],
    steps: usize,
    budget: usize,
    /// Once the budget ran out: the states that can still match, so no dead end is entered.
    feasible: Option<Feasibility>,
}

impl Matcher<'_> {
    /// Whether the steps from `pc` match the line from byte `pos` to its end.
    fn run(&mut self, pc: usize, pos: usize) -> Result<bool, Exhausted> {
        match &self.feasible {
            Some(table) if !table.get(pc, pos) => return Ok(false),
            Some(_) => {}
            None => {
                self.steps += 1;
                if self.steps > self.budget {
                    return Err(Exhausted);
                }
            }
        }
        let ops = self.ops;
        Ok(match ops.get(pc) {
            None => false,
            Some(Op::End) => pos == self.line.len(),
            Some(Op::Lit(lit)) => {
                let here = self
                    .line
                    .as_bytes()
                    .get(pos..)
                    .is_some_and(|rest| rest.starts_with(lit.as_bytes()));
                here && self.run(pc + 1, pos + lit.len())?
            }
            Some(Op::Ws) => self.whitespace(pc, pos)?,
            Some(&Op::Field(slot)) => self.field(pc, slot, pos)?,
            Some(&Op::Split {
                skip,
                first_slot,
                end_slot,
            }) => {
                self.run(pc + 1, pos)? || {
                    if let Some(group) = self.spans.get_mut(first_slot..end_slot) {
                        group.fill(None);
                    }
                    self.run(skip, pos)?
                }
            }
        })
    }

    /// Counts the bytes a field scans against the budget (a step is worth 16 bytes).
    fn charge(&mut self, bytes: usize) -> Result<(), Exhausted> {
        if self.feasible.is_none() {
            self.steps += bytes / 16;
            if self.steps > self.budget {
                return Err(Exhausted);
            }
        }
        Ok(())
    }

    /// `\s+`: the longest whitespace run first, then shorter ones.
    fn whitespace(&mut self, pc: usize, pos: usize) -> Result<bool, Exhausted> {
        let end = whitespace_run_end(self.line, pos);
        if end == pos {
            return Ok(false);
        }
        if self.run(pc + 1, end)? {
            return Ok(true);
        }
        if !self.may_start_with_whitespace(pc + 1) {
            return Ok(false);
        }
        for shorter in (pos + 1..end).rev() {
            if self.line.is_char_boundary(shorter) && self.run(pc + 1, shorter)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether step `pc` could match at a whitespace character (prunes `\s+` backtracking).
    fn may_start_with_whitespace(&self, pc: usize) -> bool {
        match self.ops.get(pc) {
            Some(Op::Lit(lit)) => lit.starts_with(char::is_whitespace),
            Some(Op::End) | None => false,
            Some(Op::Ws | Op::Field(_) | Op::Split { .. }) => true,
        }
    }

    /// `.*?`: the shortest value first; only ends where the next step can start are tried.
    fn field(&mut self, pc: usize, slot: usize, pos: usize) -> Result<bool, Exhausted> {
        let line = self.line;
        match self.ops.get(pc + 1) {
            Some(Op::End) => self.try_end(pc, slot, pos, line.len()),
            Some(Op::Lit(lit)) => {
                let mut from = pos;
                while let Some(at) = find_lit(line, from, lit) {
                    self.charge(at - from)?;
                    if self.try_end(pc, slot, pos, at)? {
                        return Ok(true);
                    }
                    from = at + 1;
                }
                Ok(false)
            }
            Some(Op::Ws) => {
                let mut from = pos;
                while let Some(at) = next_whitespace(line, from) {
                    self.charge(at - from)?;
                    if self.try_end(pc, slot, pos, at)? {
                        return Ok(true);
                    }
                    from = at + 1;
                }
                Ok(false)
            }
            _ => {
                self.charge(line.len() - pos.min(line.len()))?;
                for at in pos..=line.len() {
                    let candidate = line.is_char_boundary(at) && self.can_start(pc + 1, at);
                    if candidate && self.try_end(pc, slot, pos, at)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// A cheap necessary condition for step `pc` to match at `pos`: its first byte fits.
    /// Lets a field before a group skip most positions without a backtracking step.
    fn can_start(&self, pc: usize, pos: usize) -> bool {
        can_start(self.ops, self.line, pc, pos)
    }

    /// Ends the field in `slot` at `end` and matches the rest.
    fn try_end(
        &mut self,
        pc: usize,
        slot: usize,
        start: usize,
        end: usize,
    ) -> Result<bool, Exhausted> {
        if let Some(span) = self.spans.get_mut(slot) {
            *span = Some((start, end));
        }
        self.run(pc + 1, end)
    }
}

/// A cheap necessary condition for step `pc` of `ops` to match `line` at `pos`: its first
/// byte fits.
fn can_start(ops: &[Op], line: &str, pc: usize, pos: usize) -> bool {
    match ops.get(pc) {
        Some(Op::Lit(lit)) => line.as_bytes().get(pos) == lit.as_bytes().first(),
        Some(Op::Ws) => whitespace_len_at(line, pos) > 0,
        Some(Op::End) => pos == line.len(),
        Some(Op::Field(_)) => true,
        Some(Op::Split { skip, .. }) => {
            // Groups are not nested, so this recurses at most once more.
            can_start(ops, line, pc + 1, pos) || can_start(ops, line, *skip, pos)
        }
        None => false,
    }
}

/// An optional group being compiled.
struct OpenGroup {
    pos: usize,
    split_at: usize,
    first_slot: usize,
}

/// Turns a format string into [`Op`]s.
struct Compiler<'s> {
    spec: &'s str,
    ops: Vec<Op>,
    names: Vec<Box<str>>,
    literal: String,
    group: Option<OpenGroup>,
    content_slot: Option<usize>,
}

impl<'s> Compiler<'s> {
    fn new(spec: &'s str) -> Self {
        Compiler {
            spec,
            ops: Vec::new(),
            names: Vec::new(),
            literal: String::new(),
            group: None,
            content_slot: None,
        }
    }

    fn compile(mut self) -> Result<LogFormat, FormatError> {
        let spec = self.spec;
        let mut chars = spec.char_indices().peekable();
        while let Some((pos, ch)) = chars.next() {
            match ch {
                '\\' => {
                    let (_, escaped) = chars.next().ok_or_else(|| FormatError::DanglingEscape {
                        spec: spec.to_owned(),
                        pos,
                    })?;
                    self.literal.push(escaped);
                }
                ' ' => {
                    while chars.next_if(|&(_, c)| c == ' ').is_some() {}
                    self.push(Op::Ws);
                }
                '<' => {
                    let name = self.field_name(pos, &mut chars)?;
                    self.field(name, pos)?;
                }
                '(' => self.open_group(pos)?,
                ')' => {
                    if chars.next_if(|&(_, c)| c == '?').is_none() {
                        return Err(self.unbalanced(pos, "`)` must be followed by `?`: groups are optional parts (write `\\)` for a literal `)`)"));
                    }
                    self.close_group(pos)?;
                }
                _ => self.literal.push(ch),
            }
        }
        self.finish()
    }

    /// Reads `Name>` after a `<` at `pos`.
    fn field_name(
        &self,
        pos: usize,
        chars: &mut std::iter::Peekable<std::str::CharIndices<'s>>,
    ) -> Result<&'s str, FormatError> {
        let start = pos + 1;
        loop {
            match chars.next() {
                None => {
                    return Err(FormatError::UnclosedField {
                        spec: self.spec.to_owned(),
                        pos,
                    })
                }
                Some((end, '>')) if end == start => {
                    return Err(FormatError::EmptyFieldName {
                        spec: self.spec.to_owned(),
                        pos,
                    })
                }
                Some((end, '>')) => return Ok(&self.spec[start..end]),
                Some((_, c)) if c.is_ascii_alphanumeric() || c == '_' => {}
                Some((at, c)) => {
                    return Err(FormatError::InvalidFieldName {
                        spec: self.spec.to_owned(),
                        pos: at,
                        ch: c,
                    })
                }
            }
        }
    }

    fn field(&mut self, name: &str, pos: usize) -> Result<(), FormatError> {
        if self.names.iter().any(|n| &**n == name) {
            return Err(FormatError::DuplicateField {
                spec: self.spec.to_owned(),
                pos,
                name: name.to_owned(),
            });
        }
        if name == CONTENT {
            if self.group.is_some() {
                return Err(FormatError::OptionalContent {
                    spec: self.spec.to_owned(),
                    pos,
                });
            }
            self.content_slot = Some(self.names.len());
        }
        self.push(Op::Field(self.names.len()));
        self.names.push(name.into());
        Ok(())
    }

    fn open_group(&mut self, pos: usize) -> Result<(), FormatError> {
        if self.group.is_some() {
            return Err(self.unbalanced(
                pos,
                "groups cannot be nested (write `\\(` for a literal `(`)",
            ));
        }
        self.flush_literal();
        self.group = Some(OpenGroup {
            pos,
            split_at: self.ops.len(),
            first_slot: self.names.len(),
        });
        self.ops.push(Op::End); // placeholder, patched by close_group
        Ok(())
    }

    fn close_group(&mut self, pos: usize) -> Result<(), FormatError> {
        if self.group.is_none() {
            return Err(self.unbalanced(pos, "`)?` closes no `(` (write `\\)` for a literal `)`)"));
        }
        self.flush_literal();
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let split = Op::Split {
            skip: self.ops.len(),
            first_slot: group.first_slot,
            end_slot: self.names.len(),
        };
        if let Some(op) = self.ops.get_mut(group.split_at) {
            *op = split;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<LogFormat, FormatError> {
        if let Some(group) = &self.group {
            return Err(self.unbalanced(group.pos, "`(` is never closed by `)?`"));
        }
        self.push(Op::End);
        let steps = first_choice_steps(&self.ops);
        let content_slot = self
            .content_slot
            .ok_or_else(|| FormatError::MissingContent {
                spec: self.spec.to_owned(),
            })?;
        Ok(LogFormat {
            spec: self.spec.to_owned(),
            segments: required_segments(&self.ops),
            roles: Roles::of(&self.names),
            ops: self.ops,
            names: self.names,
            content_slot,
            steps,
        })
    }

    fn push(&mut self, op: Op) {
        self.flush_literal();
        self.ops.push(op);
    }

    fn flush_literal(&mut self) {
        if self.literal.is_empty() {
            return;
        }
        let lit = std::mem::take(&mut self.literal).into();
        self.ops.push(Op::Lit(lit));
    }

    fn unbalanced(&self, pos: usize, problem: &'static str) -> FormatError {
        FormatError::UnbalancedGroup {
            spec: self.spec.to_owned(),
            pos,
            problem,
        }
    }
}

/// Formats tried in turn; the first that matches a line wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatSet {
    formats: Vec<LogFormat>,
}

impl FormatSet {
    /// Compiles format strings, in order of preference.
    pub fn parse(specs: &[String]) -> Result<FormatSet, FormatError> {
        Self::from_formats(
            specs
                .iter()
                .map(|s| LogFormat::parse(s))
                .collect::<Result<_, _>>()?,
        )
    }

    /// A set of already compiled formats (at least one).
    pub fn from_formats(formats: Vec<LogFormat>) -> Result<FormatSet, FormatError> {
        if formats.is_empty() {
            return Err(FormatError::NoFormats);
        }
        Ok(FormatSet { formats })
    }

    /// A built-in format by name (case-insensitive, see [`builtin_formats`]), else a format
    /// string.
    pub fn resolve(name_or_spec: &str) -> Result<FormatSet, FormatError> {
        Self::from_formats(vec![resolve_one(name_or_spec)?])
    }

    /// Like [`FormatSet::resolve`] for a list whose items are each a name or a format string.
    pub fn resolve_all(names_or_specs: &[String]) -> Result<FormatSet, FormatError> {
        Self::from_formats(
            names_or_specs
                .iter()
                .map(|s| resolve_one(s))
                .collect::<Result<_, _>>()?,
        )
    }

    pub fn formats(&self) -> &[LogFormat] {
        &self.formats
    }

    /// The header of `line` under the first format that matches it.
    pub fn apply<'a>(&'a self, line: &'a str) -> Option<Header<'a>> {
        self.formats.iter().find_map(|f| f.apply(line))
    }
}

fn resolve_one(name_or_spec: &str) -> Result<LogFormat, FormatError> {
    let builtin = builtin_formats();
    if let Some(spec) = builtin.get(&name_or_spec.trim().to_ascii_lowercase()) {
        return LogFormat::parse(spec);
    }
    if !name_or_spec.contains('<') {
        let known: Vec<&str> = builtin.keys().map(String::as_str).collect();
        return Err(FormatError::UnknownName {
            name: name_or_spec.to_owned(),
            known: known.join(", "),
        });
    }
    LogFormat::parse(name_or_spec)
}

#[derive(Deserialize)]
struct FormatsFile {
    formats: BTreeMap<String, String>,
}

/// The named formats of `configs/formats.toml` (lower-case name → format string).
pub fn builtin_formats() -> BTreeMap<String, String> {
    match toml::from_str::<FormatsFile>(BUILTIN_FORMATS_TOML) {
        Ok(file) => file.formats,
        Err(err) => {
            // Only reachable if the shipped file is broken; a unit test guards it.
            tracing::error!("configs/formats.toml is invalid: {err}");
            BTreeMap::new()
        }
    }
}

/// A raw line turned into a record.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedLine {
    pub record: LogRecord,
    /// A format was given and the line did not match it.
    pub format_mismatch: bool,
}

/// [`to_record`] of an owned line: without a format the line becomes the message as it is,
/// without a copy.
pub fn to_record_owned(format: Option<&FormatSet>, line: String) -> DecodedLine {
    match format {
        None => DecodedLine {
            record: LogRecord::from_message(line),
            format_mismatch: false,
        },
        Some(_) => to_record(format, &line),
    }
}

/// Decodes one raw line. With a matching format: the message is `<Content>`, the level and
/// timestamp come from the header (normalised when recognised), and the header fields (all but
/// `<Content>`) are kept in the record's `header`. Otherwise the whole line is the message, and
/// a format that did not match is flagged (`format_mismatch`, also
/// `extra["format_mismatch"] = true`).
pub fn to_record(format: Option<&FormatSet>, line: &str) -> DecodedLine {
    let mut record = LogRecord::from_message(String::new());
    let decoded = decode_into(format, line, &mut record);
    DecodedLine {
        record,
        format_mismatch: decoded.format_mismatch,
    }
}

/// What [`decode_into`] found besides the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// A format was given and the line did not match it.
    pub format_mismatch: bool,
    /// The record's level, parsed (`Unknown` without one), so later steps need not parse it
    /// again.
    pub level: Level,
}

/// [`to_record`] into an existing record, replacing all its fields but keeping the buffers
/// of its message, timestamp and header: a caller decoding line after line into one record
/// allocates nothing here once they have grown.
pub fn decode_into(format: Option<&FormatSet>, line: &str, record: &mut LogRecord) -> Decoded {
    let mut stamp = record.timestamp.take();
    record.reset();
    let mut decoded = Decoded {
        format_mismatch: false,
        level: Level::Unknown,
    };
    let Some(set) = format else {
        record.message.push_str(line);
        return decoded;
    };
    for format in &set.formats {
        let level = with_spans(format.names.len(), |spans| {
            let line = format.match_into(line, spans)?;
            Some(fill_record(
                &Matched {
                    format,
                    line,
                    spans,
                },
                record,
                &mut stamp,
            ))
        });
        if let Some(level) = level {
            decoded.level = level;
            return decoded;
        }
    }
    record.message.push_str(line);
    record
        .extra
        .insert("format_mismatch".to_owned(), Value::Bool(true));
    decoded.format_mismatch = true;
    decoded
}

/// Fills the reset `record` from a matched line, the timestamp into `stamp`'s buffer when
/// there is one; returns the parsed level.
fn fill_record(matched: &Matched, record: &mut LogRecord, stamp: &mut Option<String>) -> Level {
    let roles = &matched.format.roles;
    let content = matched.content();
    record.message.push_str(content);
    let (level, text) = level_of(matched.role(roles.level));
    record.level = text;
    record.timestamp = timestamp_of(matched, stamp.take().unwrap_or_default());
    record
        .header
        .fill_from(&roles.stored, matched.line, matched.spans);
    level
}

/// The level of a raw header value and its text: the canonical name (borrowed, no
/// allocation) when recognised, else the raw text.
fn level_of(raw: Option<&str>) -> (Level, Option<Cow<'static, str>>) {
    let Some(raw) = raw
        .map(|r| trim_ends(r, char::is_whitespace))
        .filter(|v| !v.is_empty())
    else {
        return (Level::Unknown, None);
    };
    let level = Level::parse(raw);
    let text = match level {
        Level::Unknown => Cow::Owned(raw.to_owned()),
        level => Cow::Borrowed(level.as_str()),
    };
    (level, Some(text))
}

/// The normalised timestamp of the header: the first recognised of `Timestamp`, `Datetime`,
/// `Date Time`, `Month Date|Day Time`, `Date Day Time`, `Time`, `Date` (names in any case);
/// when none is recognised, the raw text of the first present one. A recognised one is written
/// into `buffer` (a reused allocation).
fn timestamp_of(matched: &Matched, mut buffer: String) -> Option<String> {
    let roles = &matched.format.roles;
    // Fields are looked up per candidate: the first one tried usually answers, and a
    // `Timestamp` answers without the others' fields.
    let field = |slot| matched.role(slot);
    let (date, time, day, month) = (
        || field(roles.date),
        || field(roles.time),
        || field(roles.day),
        || field(roles.month),
    );
    let mut first_raw: Option<String> = None;
    // Only the candidates whose fields the format has: the others are never present.
    for &stamp in &roles.stamps {
        let (one, two, three);
        let parts: &[Option<&str>] = match stamp {
            Stamp::Timestamp => {
                one = [field(roles.timestamp)];
                &one
            }
            Stamp::Datetime => {
                one = [field(roles.datetime)];
                &one
            }
            Stamp::DateTime => {
                two = [date(), time()];
                &two
            }
            Stamp::MonthDateTime => {
                three = [month(), date().or_else(day), time()];
                &three
            }
            Stamp::DateDayTime => {
                three = [date(), day(), time()];
                &three
            }
            Stamp::Time => {
                one = [time()];
                &one
            }
            Stamp::Date => {
                one = [date()];
                &one
            }
        };
        if parts.iter().any(Option::is_none) {
            continue;
        }
        buffer.clear();
        if push_normalized_timestamp(&mut buffer, parts) {
            return Some(buffer);
        }
        if first_raw.is_none() {
            let mut raw = String::new();
            push_joined(&mut raw, parts);
            first_raw = Some(raw);
        }
    }
    first_raw
}

/// Appends the present `parts` separated by single spaces.
fn push_joined(out: &mut String, parts: &[Option<&str>]) {
    push_joined_from(out, parts, 0);
}

/// Whether `text` equals the present `parts` joined by single spaces, without joining them:
/// `Ok` when it does, else `Err((kept, count))` where the first `count` parts match
/// `text[..kept]`, so that [`push_joined_from`] after `truncate(kept)` completes the join.
fn is_joined(text: &str, parts: &[Option<&str>]) -> Result<(), (usize, usize)> {
    let mut rest = text.as_bytes();
    let mut count = 0;
    for (i, part) in parts.iter().flatten().enumerate() {
        let kept = text.len() - rest.len();
        if i > 0 {
            match rest.split_first() {
                Some((b' ', tail)) => rest = tail,
                _ => return Err((kept, count)),
            }
        }
        match rest.split_at_checked(part.len()) {
            Some((head, tail)) if timestamp::same_bytes(head, part.as_bytes()) => rest = tail,
            _ => return Err((kept, count)),
        }
        count += 1;
    }
    match rest.is_empty() {
        true => Ok(()),
        false => Err((text.len() - rest.len(), count)),
    }
}

/// The rest of [`push_joined`] of `parts` after the first `skip` present ones, appended to
/// their join.
#[inline]
fn push_joined_from(out: &mut String, parts: &[Option<&str>], skip: usize) {
    for (i, part) in parts.iter().flatten().enumerate().skip(skip) {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(part);
    }
}

/// `timestamp::parse` + RFC 3339 rendering of `parts` joined by spaces, remembering the last
/// answer per thread: log lines come in time order, many per second, so consecutive lines
/// usually repeat the same text. The key is the full joined text, compared without building
/// it, so a hit only copies the answer to `out`; a miss rewrites the key from the first part
/// that differs and renders into the kept buffer. Returns
/// whether the text was recognised (and `out` appended to).
fn push_normalized_timestamp(out: &mut String, parts: &[Option<&str>]) -> bool {
    thread_local! {
        static LAST: std::cell::RefCell<TimestampMemo> = const {
            std::cell::RefCell::new(TimestampMemo {
                key: String::new(),
                answer: timestamp::MillisText::new(),
                parsed: false,
                parser: timestamp::Parser::new(),
            })
        };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let TimestampMemo {
            key,
            answer,
            parsed,
            parser,
        } = &mut *last;
        let joined = is_joined(key, parts);
        if key.is_empty() || joined.is_err() {
            // Rewrite only from the first part that differs, usually the time.
            let (kept, count) = joined.err().unwrap_or_default();
            key.truncate(kept);
            push_joined_from(key, parts, count);
            let ts = parser.parse(key);
            *parsed = ts.is_some();
            if let Some(ts) = ts {
                answer.set(&ts);
            }
        }
        if *parsed {
            push_answer(out, answer.as_str());
        }
        *parsed
    })
}

/// `out.push_str(answer)`, with the usual 24-byte answer copied as a fixed size: inline
/// moves instead of a `memcpy` call.
fn push_answer(out: &mut String, answer: &str) {
    match answer.get(..24) {
        Some(usual) if answer.len() == 24 => out.push_str(usual),
        _ => out.push_str(answer),
    }
}

/// The last answer of [`push_normalized_timestamp`].
struct TimestampMemo {
    /// The joined parts.
    key: String,
    /// Their normalised text, when `parsed`.
    answer: timestamp::MillisText,
    parsed: bool,
    /// Parses a new key reusing the date of an earlier one.
    parser: timestamp::Parser,
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;
    use std::path::{Path, PathBuf};

    /// The eight Loghub 2k datasets with logparser's formats for them.
    const LOGHUB: [(&str, &str); 8] = [
        ("HDFS", "<Date> <Time> <Pid> <Level> <Component>: <Content>"),
        ("Hadoop", r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>"),
        ("Spark", "<Date> <Time> <Level> <Component>: <Content>"),
        (
            "Zookeeper",
            r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
        ),
        (
            "BGL",
            "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
        ),
        ("HPC", "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>"),
        (
            "Windows",
            "<Date> <Time>, <Level>                  <Component>    <Content>",
        ),
        ("Apache", r"\[<Time>\] \[<Level>\] <Content>"),
    ];

    const LINUX: &str = r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>";

    fn compile(spec: &str) -> LogFormat {
        LogFormat::parse(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    /// logpai/logparser's `generate_logformat_regex`: `<X>` → `(?P<X>.*?)`, spaces → `\s+`,
    /// everything else verbatim as regex, anchored.
    fn logparser_regex(spec: &str) -> Regex {
        let field = Regex::new(r"<[^<>]+>").expect("field regex");
        let spaces = Regex::new(" +").expect("space regex");
        let mut pattern = String::from("^");
        let mut last = 0;
        for m in field.find_iter(spec) {
            pattern.push_str(&spaces.replace_all(&spec[last..m.start()], r"\s+"));
            pattern.push_str(&format!("(?P<{}>.*?)", &spec[m.start() + 1..m.end() - 1]));
            last = m.end();
        }
        pattern.push_str(&spaces.replace_all(&spec[last..], r"\s+"));
        pattern.push('$');
        Regex::new(&pattern).expect("logparser regex")
    }

    /// What the oracle regex captures on the trimmed line, in format field order.
    fn oracle<'a>(re: &Regex, format: &LogFormat, line: &'a str) -> Option<Vec<Option<&'a str>>> {
        let caps = re.captures(line.trim())?;
        Some(
            format
                .field_names()
                .map(|n| caps.name(n).map(|m| m.as_str()))
                .collect(),
        )
    }

    /// What the fast matcher captures, in the same shape as [`oracle`].
    fn fast<'a>(format: &'a LogFormat, line: &'a str) -> Option<Vec<Option<&'a str>>> {
        let header = format.apply(line)?;
        Some(
            format
                .field_names()
                .map(|n| {
                    if n == CONTENT {
                        Some(header.content)
                    } else {
                        header.get(n)
                    }
                })
                .collect(),
        )
    }

    /// What the matcher captures when it goes straight to the feasibility table.
    fn tabled<'a>(format: &'a LogFormat, line: &'a str) -> Option<Vec<Option<&'a str>>> {
        let mut spans = vec![None; format.names.len()];
        let line = format.match_with_budget(line.trim(), &mut spans, 0)?;
        Some(
            spans
                .iter()
                .map(|span| span.and_then(|(start, end)| line.get(start..end)))
                .collect(),
        )
    }

    fn loghub_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("LOGHUB_2K_DIR") {
            return PathBuf::from(dir);
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/loghub-2k")
    }

    /// Raw lines and structured CSV rows (header row first) of a dataset.
    fn load(name: &str) -> (String, Vec<Vec<String>>) {
        let dir = loghub_dir().join(name);
        let read = |file: String| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (set LOGHUB_2K_DIR to the loghub-2k folder)",
                    path.display()
                )
            })
        };
        let log = read(format!("{name}_2k.log"));
        let csv = read(format!("{name}_2k.log_structured_corrected.csv"));
        (log, parse_csv(&csv))
    }

    /// A minimal RFC 4180 reader: quoted fields, `""` escapes, CRLF or LF rows.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, _) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, _) => field.push(c),
            }
        }
        if !field.is_empty() || !row.is_empty() {
            row.push(field);
            rows.push(row);
        }
        rows
    }

    #[test]
    fn csv_reader_handles_quotes() {
        let rows = parse_csv("a,b\r\n1,\"x, \"\"y\"\"\"\n2,\n");
        assert_eq!(
            rows,
            vec![
                vec!["a".to_owned(), "b".to_owned()],
                vec!["1".to_owned(), "x, \"y\"".to_owned()],
                vec!["2".to_owned(), String::new()],
            ]
        );
    }

    /// The CSV went through pandas, which read all-digit columns as numbers (dropping leading
    /// zeros: HDFS `081109` became `81109`) and `NULL` as a missing value (written empty).
    fn same_value(ours: &str, csv: &str) -> bool {
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        ours == csv
            || (ours == "NULL" && csv.is_empty())
            || (numeric(ours)
                && numeric(csv)
                && ours.trim_start_matches('0') == csv.trim_start_matches('0'))
    }

    #[test]
    fn loghub_fields_equal_the_structured_csv() {
        for (name, spec) in LOGHUB {
            let format = compile(spec);
            let (log, rows) = load(name);
            let lines: Vec<&str> = log.lines().collect();
            let (header, rows) = rows
                .split_first()
                .unwrap_or_else(|| panic!("{name}: empty CSV"));
            assert_eq!(lines.len(), 2000, "{name}");
            assert_eq!(rows.len(), 2000, "{name}");
            // Columns between LineId and EventId are the format's fields, Content included.
            let columns = &header[1..header.len() - 2];
            let names: Vec<&str> = format.field_names().collect();
            assert_eq!(columns, names.as_slice(), "{name}");
            let mut wrong = Vec::new();
            for (i, (line, row)) in lines.iter().zip(rows).enumerate() {
                let Some(got) = fast(&format, line) else {
                    wrong.push(format!("line {}: no match: {line}", i + 1));
                    continue;
                };
                for ((column, want), value) in columns.iter().zip(&row[1..]).zip(got) {
                    let value = value.unwrap_or_default();
                    if !same_value(value, want) {
                        wrong.push(format!("line {} {column}: {value:?} != {want:?}", i + 1));
                    }
                }
            }
            assert!(
                wrong.is_empty(),
                "{name}: {} wrong:\n{}",
                wrong.len(),
                wrong.join("\n")
            );
        }
    }

    #[test]
    fn fast_matcher_agrees_with_logparser_regex_on_loghub() {
        for (name, spec) in LOGHUB {
            let format = compile(spec);
            let re = logparser_regex(spec);
            let (log, _) = load(name);
            let mut count = 0;
            for line in log.lines() {
                let want = oracle(&re, &format, line);
                assert_eq!(fast(&format, line), want, "{name}: {line}");
                assert_eq!(tabled(&format, line), want, "table, {name}: {line}");
                count += 1;
            }
            assert_eq!(count, 2000, "{name}");
        }
    }

    #[test]
    fn fast_matcher_agrees_with_regex_on_generated_lines() {
        // Deterministic pseudo-random lines over an alphabet rich in separators, so lazy
        // fields, whitespace runs and optional groups all have to backtrack.
        let specs = [
            LINUX,
            "<A>:<B> <Content>",
            "<A><B>-<Content>",
            r"\[<A>\] <B>(\[<C>\])?: <Content>",
            r"<A>( \(<B>\))?: <Content>",
            "<A> <B> <C> <D>: <Content>",
            "x <A>  <B>,<Content>",
            "<Content> end",
            "<A>:( <B>)?<Content>",
        ];
        let alphabet = [
            " ", "  ", "\t", ":", ": ", "[", "]", "(", ")", "a", "b7", "-", ",", "x", "é", "end",
            "\u{a0}",
        ];
        let mut rng = crate::rng::XorShift64::new(0x2545_f491_4f6c_dd1d);
        let mut next = || rng.next_u64();
        let mut matched = 0;
        for spec in specs {
            let format = compile(spec);
            let re = logparser_regex(spec);
            for _ in 0..3000 {
                let len = (next() % 14) as usize;
                let line: String = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                let want = oracle(&re, &format, &line);
                matched += usize::from(want.is_some());
                assert_eq!(fast(&format, &line), want, "{spec}: {line:?}");
                assert_eq!(tabled(&format, &line), want, "table, {spec}: {line:?}");
            }
        }
        // The generator must exercise matches, not only mismatches.
        assert!(matched > 1000, "{matched}");
    }

    /// Lines built from each format's own steps (random field values and whitespace runs,
    /// groups taken or not), then sometimes damaged: the first-choice path, where it decides,
    /// must give the backtracking matcher's captures, and `apply` the regex's.
    #[test]
    fn first_choices_agree_with_backtracking_on_format_shaped_lines() {
        let mut specs: Vec<String> = builtin_formats().into_values().collect();
        specs.extend(
            [
                "<A>:<B> <Content>",
                "<A><B>-<Content>",
                r"\[<A>\] <B>(\[<C>\])?: <Content>",
                "<A>, <B> <Content>",
                "<A>ab<B>  <Content>",
            ]
            .map(String::from),
        );
        let values = [
            "",
            "a",
            "081109",
            "dfs.DataNode$PacketResponder",
            "R02-M1-N0-C:J12-U11",
            "x:y",
            "é",
            "日本語テキスト",
            "[a]",
            "a-b",
            "ab",
            "2015-07-29",
            "\u{1}",
            "a\u{85}b",
        ];
        let runs = [
            " ",
            "  ",
            "\t",
            "\u{a0}",
            "\u{2003}",
            "\u{3000}",
            " \u{3000}",
            "\u{85}",
            "\r\n",
        ];
        let mut rng = crate::rng::XorShift64::new(0x9e37_79b9_7f4a_7c15);
        let (mut decided, mut matched) = (0, 0);
        for spec in &specs {
            let format = compile(spec);
            let re = logparser_regex(spec);
            for _ in 0..400 {
                let mut line = String::new();
                let mut pc = 0;
                while let Some(op) = format.ops.get(pc) {
                    pc += 1;
                    match op {
                        Op::Lit(lit) => line.push_str(lit),
                        Op::Ws => line.push_str(runs[rng.below(runs.len())]),
                        Op::Field(_) => {
                            for _ in 0..rng.below(3) {
                                line.push_str(values[rng.below(values.len())]);
                            }
                        }
                        Op::Split { skip, .. } => {
                            if rng.below(2) == 0 {
                                pc = *skip;
                            }
                        }
                        Op::End => {}
                    }
                }
                if rng.below(4) == 0 && !line.is_empty() {
                    // Damage: drop a character.
                    let cut = rng.below(line.len());
                    if line.is_char_boundary(cut) {
                        line.remove(cut);
                    }
                }
                let trimmed = line.trim();
                let mut fast_spans = vec![None; format.names.len()];
                let mut slow_spans = vec![None; format.names.len()];
                let slow = format.match_with_budget(trimmed, &mut slow_spans, usize::MAX);
                matched += usize::from(slow.is_some());
                if format.match_first_choices(trimmed, &mut fast_spans) {
                    decided += 1;
                    assert!(slow.is_some(), "{spec}: {line:?}");
                    assert_eq!(fast_spans, slow_spans, "{spec}: {line:?}");
                }
                // The regex's fields stop at line breaks (a deliberate difference).
                if !line.contains('\n') {
                    assert_eq!(
                        fast(&format, &line),
                        oracle(&re, &format, &line),
                        "{spec}: {line:?}"
                    );
                }
            }
        }
        assert!(decided > 3000 && matched > decided, "{decided} {matched}");
    }

    #[test]
    fn optional_group_with_and_without_pid() {
        let format = compile(LINUX);
        let with = format
            .apply("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname=");
        assert_eq!(
            with,
            Some(Header {
                content: "authentication failure; logname=",
                fields: vec![
                    ("Month", "Jun"),
                    ("Date", "14"),
                    ("Time", "15:16:01"),
                    ("Level", "combo"),
                    ("Component", "sshd(pam_unix)"),
                    ("PID", "19939"),
                ],
            })
        );
        let without = format.apply("Jun 15 04:06:18 combo syslogd 1.4.1: restart.");
        assert_eq!(
            without,
            Some(Header {
                content: "restart.",
                fields: vec![
                    ("Month", "Jun"),
                    ("Date", "15"),
                    ("Time", "04:06:18"),
                    ("Level", "combo"),
                    ("Component", "syslogd 1.4.1"),
                ],
            })
        );
    }

    #[test]
    fn fields_are_lazy_and_the_last_takes_the_rest() {
        let format = compile("<A>:<B>:<Content>");
        let header = format.apply("  a:b:c:d  ");
        assert_eq!(
            header,
            Some(Header {
                content: "c:d",
                fields: vec![("A", "a"), ("B", "b")],
            })
        );
        let spaced_format = compile("<A> <Content>");
        let spaced = spaced_format.apply("a \t  b  c");
        assert_eq!(
            spaced.map(|h| (h.get("A"), h.content)),
            Some((Some("a"), "b  c"))
        );
    }

    #[test]
    fn fields_span_line_breaks() {
        let format = compile("<Level>: <Content>");
        let header = format.apply("ERROR: failed\n\tat Foo.bar(Foo.java:1)\n");
        assert_eq!(
            header.map(|h| (h.get("Level"), h.content)),
            Some((Some("ERROR"), "failed\n\tat Foo.bar(Foo.java:1)"))
        );
    }

    #[test]
    fn mismatches() {
        let hdfs = compile(LOGHUB[0].1);
        assert_eq!(hdfs.apply(""), None);
        assert_eq!(hdfs.apply("plain text without a header"), None);
        assert_eq!(hdfs.apply("081109 203615 148 INFO no colon here"), None);
        let apache = compile(LOGHUB[7].1);
        assert_eq!(apache.apply("Sun Dec 04 04:47:44 2005 [error] x"), None);
        assert_eq!(apache.apply("[Sun Dec 04 04:47:44 2005][error] x"), None);
    }

    #[test]
    fn pathological_backtracking_stays_fast_and_exact() {
        // Many whitespace positions and no final literal: exponential without memoisation.
        let spec = "<A> <B> <C> <D> <E> <F>: <Content>";
        let format = compile(spec);
        let re = logparser_regex(spec);
        let line = format!("a: {}end", "w ".repeat(400));
        let start = std::time::Instant::now();
        assert_eq!(fast(&format, &line), oracle(&re, &format, &line));
        assert_eq!(format.apply(&line), None);
        let mut colon = "w: ".repeat(300);
        colon.push('z');
        assert_eq!(fast(&format, &colon), oracle(&re, &format, &colon));
        assert!(fast(&format, &colon).is_some());
        // Whitespace runs split between several empty fields: found only after heavy
        // backtracking (Thunderbird's format on a Windows line).
        let spec = builtin_formats()
            .get("thunderbird")
            .cloned()
            .unwrap_or_default();
        let format = compile(&spec);
        let re = logparser_regex(&spec);
        let line =
            "2016-09-29 02:04:02, Info                  CBS    Session: 30546354 initialized";
        let got = fast(&format, line);
        assert_eq!(got, oracle(&re, &format, line));
        let want = [
            "2016-09-29",
            "02:04:02,",
            "Info",
            "",
            "CBS",
            "",
            "",
            "",
            "Session",
            "",
            "30546354 initialized",
        ];
        let want: Vec<Option<&str>> = want
            .iter()
            .enumerate()
            .map(|(slot, v)| (slot != 9).then_some(*v))
            .collect();
        assert_eq!(got, Some(want));
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
    }

    #[test]
    fn spec_and_field_names() {
        let format = compile(LINUX);
        assert_eq!(format.spec(), LINUX);
        let names: Vec<&str> = format.field_names().collect();
        assert_eq!(
            names,
            [
                "Month",
                "Date",
                "Time",
                "Level",
                "Component",
                "PID",
                "Content"
            ]
        );
    }

    #[test]
    fn escapes_make_literals() {
        let format = compile(r"\<<Level>\> \(x\)\\ <Content>");
        let header = format.apply(r"<warn> (x)\ hello");
        assert_eq!(
            header.map(|h| (h.get("Level"), h.content)),
            Some((Some("warn"), "hello"))
        );
    }

    fn err(spec: &str) -> FormatError {
        match LogFormat::parse(spec) {
            Ok(_) => panic!("{spec} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn every_error_case() {
        let s = |spec: &str| spec.to_owned();
        assert_eq!(
            err("<Date> <Time>"),
            FormatError::MissingContent {
                spec: s("<Date> <Time>")
            }
        );
        assert_eq!(err(""), FormatError::MissingContent { spec: s("") });
        assert_eq!(
            err("<Date> <Content"),
            FormatError::UnclosedField {
                spec: s("<Date> <Content"),
                pos: 7
            }
        );
        assert_eq!(
            err("<> <Content>"),
            FormatError::EmptyFieldName {
                spec: s("<> <Content>"),
                pos: 0
            }
        );
        assert_eq!(
            err("<Da te> <Content>"),
            FormatError::InvalidFieldName {
                spec: s("<Da te> <Content>"),
                pos: 3,
                ch: ' '
            }
        );
        assert_eq!(
            err("<A> <A> <Content>"),
            FormatError::DuplicateField {
                spec: s("<A> <A> <Content>"),
                pos: 4,
                name: s("A")
            }
        );
        assert_eq!(
            err("<Content> <Content>"),
            FormatError::DuplicateField {
                spec: s("<Content> <Content>"),
                pos: 10,
                name: s("Content")
            }
        );
        let unbalanced = |spec: &str| match err(spec) {
            FormatError::UnbalancedGroup { pos, .. } => pos,
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(unbalanced("<Content> <A>(\\[<B>\\]"), 13);
        assert_eq!(unbalanced("<A>\\[<B>\\])? <Content>"), 10);
        assert_eq!(unbalanced("<A>(\\[<B>\\]) <Content>"), 11);
        assert_eq!(unbalanced("<A>(x(<B>)?)? <Content>"), 5);
        assert_eq!(
            err("<A>( <Content>)?"),
            FormatError::OptionalContent {
                spec: s("<A>( <Content>)?"),
                pos: 5
            }
        );
        assert_eq!(
            err("<Content> \\"),
            FormatError::DanglingEscape {
                spec: s("<Content> \\"),
                pos: 10
            }
        );
        assert_eq!(FormatSet::parse(&[]), Err(FormatError::NoFormats));
    }

    #[test]
    fn error_messages_name_the_position() {
        assert_eq!(
            err("<Date> <Content").to_string(),
            "format `<Date> <Content`: `<` at byte 7 is never closed by `>` (write `\\<` for a literal `<`)"
        );
        assert_eq!(
            err("<Content> <A>(x").to_string(),
            "format `<Content> <A>(x`: unbalanced group at byte 13: `(` is never closed by `)?`"
        );
    }

    #[test]
    fn builtin_formats_all_parse() {
        let builtin = builtin_formats();
        let names: Vec<&str> = builtin.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "android",
                "apache",
                "bgl",
                "hadoop",
                "hdfs",
                "healthapp",
                "hpc",
                "linux",
                "mac",
                "openssh",
                "openstack",
                "plain",
                "proxifier",
                "spark",
                "syslog",
                "thunderbird",
                "windows",
                "zookeeper",
            ]
        );
        for (name, spec) in &builtin {
            assert!(LogFormat::parse(spec).is_ok(), "{name}: {spec}");
        }
        for (name, spec) in LOGHUB {
            assert_eq!(
                builtin.get(&name.to_ascii_lowercase()).map(String::as_str),
                Some(spec)
            );
        }
        assert_eq!(builtin.get("linux").map(String::as_str), Some(LINUX));
    }

    #[test]
    fn builtin_formats_match_sample_lines() {
        let samples = [
            ("mac", "Jul  1 09:00:55 calvisitor-10-105-160-95 kernel[0]: IOThunderboltSwitch<0>(0x0)::listenerCallback", "IOThunderboltSwitch<0>(0x0)::listenerCallback"),
            ("mac", "Jul  1 09:01:05 calvisitor-10-105-160-95 com.apple.CDScheduler[43]: Thermal pressure state: 1 Memory pressure state: 0", "Thermal pressure state: 1 Memory pressure state: 0"),
            ("android", "03-17 16:13:38.811  1702  2395 D WindowManager: printFreezingDisplayLogsopening app wtoken", "printFreezingDisplayLogsopening app wtoken"),
            ("healthapp", "20171223-22:15:29:606|Step_LSC|30002312|onStandStepChanged 3579", "onStandStepChanged 3579"),
            ("proxifier", "[10.30 16:49:06] chrome.exe - proxy.cse.cuhk.edu.hk:5070 open through proxy", "proxy.cse.cuhk.edu.hk:5070 open through proxy"),
            ("openssh", "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking failed", "reverse mapping checking failed"),
            ("syslog", "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown", "check pass; user unknown"),
            ("plain", "  anything at all ", "anything at all"),
        ];
        for (name, line, content) in samples {
            let set = FormatSet::resolve(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(set.apply(line).map(|h| h.content), Some(content), "{name}");
        }
    }

    #[test]
    fn resolve_names_or_specs() {
        assert_eq!(
            FormatSet::resolve("HDFS").map(|s| s.formats()[0].spec().to_owned()),
            Ok(LOGHUB[0].1.to_owned())
        );
        assert_eq!(
            FormatSet::resolve("<L> <Content>").map(|s| s.formats()[0].spec().to_owned()),
            Ok("<L> <Content>".to_owned())
        );
        assert!(matches!(
            FormatSet::resolve("hdfss"),
            Err(FormatError::UnknownName { name, .. }) if name == "hdfss"
        ));
        assert!(matches!(
            FormatSet::resolve("<L>"),
            Err(FormatError::MissingContent { .. })
        ));
        let set = FormatSet::resolve_all(&["apache".to_owned(), "plain".to_owned()]);
        assert_eq!(set.as_ref().map(|s| s.formats().len()), Ok(2));
    }

    #[test]
    fn format_set_first_match_wins() {
        let set = FormatSet::parse(&[
            r"\[<Time>\] \[<Level>\] <Content>".to_owned(),
            "<Level>: <Content>".to_owned(),
            "<Content>".to_owned(),
        ]);
        let set = set.unwrap_or_else(|e| panic!("{e}"));
        let level = |line| set.apply(line).and_then(|h| h.get("Level"));
        assert_eq!(level("[t] [error] x: y"), Some("error"));
        assert_eq!(level("warn: y"), Some("warn"));
        assert_eq!(level("just text"), None);
        assert_eq!(set.apply("just text").map(|h| h.content), Some("just text"));
    }

    fn extra(record: &LogRecord, key: &str) -> Option<Value> {
        record.header.get(key).map(Value::from)
    }

    #[test]
    fn record_from_hadoop_line() {
        let set = FormatSet::resolve("hadoop").unwrap_or_else(|e| panic!("{e}"));
        let line = "2015-10-18 18:01:47,978 INFO [main] org.apache.hadoop.mapreduce.v2.app.MRAppMaster: Created MRAppMaster";
        let decoded = to_record(Some(&set), line);
        assert!(!decoded.format_mismatch);
        let r = &decoded.record;
        assert_eq!(r.message, "Created MRAppMaster");
        assert_eq!(r.level.as_deref(), Some("INFO"));
        assert_eq!(r.timestamp.as_deref(), Some("2015-10-18T18:01:47.978Z"));
        assert_eq!(extra(r, "Date"), Some(Value::from("2015-10-18")));
        assert_eq!(extra(r, "Time"), Some(Value::from("18:01:47,978")));
        assert_eq!(extra(r, "Level"), Some(Value::from("INFO")));
        assert_eq!(extra(r, "Process"), Some(Value::from("main")));
        assert_eq!(
            extra(r, "Component"),
            Some(Value::from(
                "org.apache.hadoop.mapreduce.v2.app.MRAppMaster"
            ))
        );
        assert_eq!(r.header.len(), 5);
        assert!(r.extra.is_empty());
        assert_eq!(*r.tags, crate::model::default_tags());
    }

    #[test]
    fn record_levels_and_timestamps_per_shape() {
        let cases = [
            (
                "hdfs",
                "081109 203615 148 WARN dfs.DataNode: x",
                Some("WARNING"),
                Some("2008-11-09T20:36:15.000Z"),
            ),
            (
                "apache",
                "[Sun Dec 04 04:47:44 2005] [notice] x",
                Some("NOTICE"),
                Some("2005-12-04T04:47:44.000Z"),
            ),
            (
                "bgl",
                "- 1117838570 2005.06.03 R02 2005-06-03-15.42.50.675872 R02 RAS KERNEL FATAL x",
                Some("FATAL"),
                Some("2005-06-03T22:42:50.000Z"),
            ),
            (
                "hpc",
                "134681 node-246 unix.hw state_change.unavailable 1077804742 1 x",
                None,
                Some("2004-02-26T14:12:22.000Z"),
            ),
            (
                "spark",
                "17/06/09 20:10:40 ERROR executor.Executor: x",
                Some("ERROR"),
                Some("2017-06-09T20:10:40.000Z"),
            ),
            (
                "windows",
                "2016-09-28 04:30:30, Info                  CBS    x",
                Some("INFO"),
                Some("2016-09-28T04:30:30.000Z"),
            ),
            (
                "zookeeper",
                "2015-07-29 17:41:44,747 - WARN  [main:QuorumPeer@774] - x",
                Some("WARNING"),
                Some("2015-07-29T17:41:44.747Z"),
            ),
            // Unknown level and unrecognised time keep their raw text.
            (
                "hdfs",
                "someday noon 1 RAS dfs.X: x",
                Some("RAS"),
                Some("someday noon"),
            ),
        ];
        for (name, line, level, ts) in cases {
            let set = FormatSet::resolve(name).unwrap_or_else(|e| panic!("{e}"));
            let r = to_record(Some(&set), line).record;
            assert_eq!(r.message, "x", "{name}");
            assert_eq!(r.level.as_deref(), level, "{name}");
            assert_eq!(r.timestamp.as_deref(), ts, "{name}");
        }
    }

    #[test]
    fn record_timestamp_candidates_by_the_fields_present() {
        let year = chrono::Datelike::year(&chrono::Utc::now());
        let dec10 = [year, year + 1].map(|y| format!("{y}-12-10T06:55:46.000Z"));
        // `Month Day Time` without a `Date`: the day stands in for it.
        let set =
            FormatSet::resolve("<Month> <Day> <Time> <Content>").unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "Dec 10 06:55:46 x").record;
        assert!(
            r.timestamp.as_ref().is_some_and(|t| dec10.contains(t)),
            "{:?}",
            r.timestamp
        );
        // None recognised: the raw text of the first present candidate.
        let set =
            FormatSet::resolve("<Day> <Time> <Date> <Content>").unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "Mon zz yy x").record;
        assert_eq!(r.timestamp.as_deref(), Some("yy zz"));
        // A candidate whose field is empty on the line is skipped.
        let set = FormatSet::resolve("<Timestamp>|<Date>|<Time>|<Content>")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "|a|b|x").record;
        assert_eq!(r.timestamp.as_deref(), Some("a b"));
    }

    #[test]
    fn record_timestamp_from_month_day_time() {
        let set = FormatSet::resolve("openssh").unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "Dec 10 06:55:46 LabSZ sshd[24200]: x").record;
        let year = chrono::Datelike::year(&chrono::Utc::now());
        let want = [year, year + 1].map(|y| format!("{y}-12-10T06:55:46.000Z"));
        assert!(
            r.timestamp.as_ref().is_some_and(|t| want.contains(t)),
            "{:?}",
            r.timestamp
        );
        assert_eq!(extra(&r, "Pid"), Some(Value::from("24200")));
    }

    #[test]
    fn severity_field_and_reserved_names() {
        let set = FormatSet::resolve("<severity> <message> <id> <Content>")
            .unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "err m 7 body").record;
        assert_eq!(r.level.as_deref(), Some("ERROR"));
        assert_eq!(r.message, "body");
        assert_eq!(r.id, None);
        assert_eq!(extra(&r, "severity"), Some(Value::from("err")));
        assert_eq!(extra(&r, "message"), None);
        assert_eq!(extra(&r, "id"), None);
        // The record still serializes with unique keys.
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(json.matches("\"message\"").count(), 1, "{json}");
    }

    #[test]
    fn unmatched_optional_fields_are_not_stored() {
        let set = FormatSet::resolve("linux").unwrap_or_else(|e| panic!("{e}"));
        let r = to_record(Some(&set), "Jun 15 04:06:18 combo syslogd 1.4.1: restart.").record;
        assert_eq!(extra(&r, "PID"), None);
        assert_eq!(extra(&r, "Component"), Some(Value::from("syslogd 1.4.1")));
    }

    #[test]
    fn mismatch_and_no_format() {
        let set = FormatSet::resolve("hdfs").unwrap_or_else(|e| panic!("{e}"));
        let decoded = to_record(Some(&set), "free text");
        assert!(decoded.format_mismatch);
        assert_eq!(decoded.record.message, "free text");
        assert_eq!(
            decoded.record.extra.get("format_mismatch"),
            Some(&Value::Bool(true))
        );
        assert_eq!(decoded.record.level, None);
        assert_eq!(decoded.record.timestamp, None);

        let plain = to_record(None, "081109 203615 148 INFO dfs.DataNode: x");
        assert!(!plain.format_mismatch);
        assert_eq!(
            plain.record,
            LogRecord::from_message("081109 203615 148 INFO dfs.DataNode: x")
        );
    }

    #[test]
    fn never_panics_on_odd_lines() {
        let set = FormatSet::parse(&[
            LINUX.to_owned(),
            r"<A>( \(<B>\))?: <Content>".to_owned(),
            "é<A>ü <Content>".to_owned(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let odd = [
            "",
            " ",
            "é",
            "éü",
            "é xü y",
            "\u{3000}a\u{3000}b",
            "a:(\u{2028}",
            "\0",
            "ü:",
            "\u{10FFFF} (x): y",
        ];
        for line in odd {
            for cut in 0..=line.len() {
                if let Some(part) = line.get(..cut) {
                    let _ = to_record(Some(&set), part);
                }
            }
        }
        let r = to_record(Some(&set), "éx ü y").record;
        assert_eq!(r.message, "y");
        assert_eq!(extra(&r, "A"), Some(Value::from("x ")));
    }

    /// What the backtracking matcher (with its usual budget) finds on `line`, trimmed as
    /// `str::trim` does.
    fn general_spans(format: &LogFormat, line: &str) -> Option<Vec<Span>> {
        let line = line.trim();
        let budget = STEP_BUDGET_BASE + line.len() / STEP_BUDGET_BYTES_PER_STEP;
        let mut spans = vec![Some((usize::MAX, usize::MAX)); format.names.len()];
        format.match_with_budget(line, &mut spans, budget)?;
        Some(spans)
    }

    /// What the first-choice path alone finds; `None` also when it defers.
    fn first_choice_spans(format: &LogFormat, line: &str) -> Option<Vec<Span>> {
        // Stale values, so a slot the path forgets to set shows.
        let mut spans = vec![Some((usize::MAX, usize::MAX)); format.names.len()];
        format
            .match_first_choices(line.trim(), &mut spans)
            .then_some(spans)
    }

    /// Checks the first-choice path and `match_into` against the backtracking matcher on one
    /// line; returns whether the first-choice path decided it.
    fn assert_same_as_general(format: &LogFormat, line: &str) -> bool {
        let spec = format.spec();
        let want = general_spans(format, line);
        let first = first_choice_spans(format, line);
        if first.is_some() {
            assert_eq!(first, want, "first choices, {spec}: {line:?}");
        }
        let mut spans = vec![Some((usize::MAX, usize::MAX)); format.names.len()];
        let got = format.match_into(line, &mut spans).map(|trimmed| {
            assert_eq!(trimmed, line.trim(), "{spec}: {line:?}");
            spans
        });
        assert_eq!(got, want, "match_into, {spec}: {line:?}");
        first.is_some()
    }

    /// Every format this module knows: Loghub's, the built-in ones and some with groups and
    /// adjacent fields.
    fn all_formats() -> Vec<LogFormat> {
        let mut specs: Vec<String> = builtin_formats().into_values().collect();
        specs.extend(LOGHUB.iter().map(|(_, spec)| (*spec).to_owned()));
        specs.extend(
            [
                "<A>:<B> <Content>",
                "<A><B>-<Content>",
                r"\[<A>\] <B>(\[<C>\])?: <Content>",
                r"<A>( \(<B>\))?: <Content>",
                "x <A>  <B>,<Content>",
                "<Content> end",
                "<A>:( <B>)?<Content>",
                "<A>(<B>)?<C> <Content>",
                "<A> ( <B>)?<Content>",
                "<A>: :<B> <Content>",
                "é<A>ü <Content>",
            ]
            .map(str::to_owned),
        );
        specs.iter().map(|spec| compile(spec)).collect()
    }

    #[test]
    fn first_choices_equal_the_backtracking_matcher_on_loghub() {
        let formats = all_formats();
        for (name, spec) in LOGHUB {
            let own = compile(spec);
            let (log, _) = load(name);
            let mut decided = 0;
            for line in log.lines() {
                decided += usize::from(assert_same_as_general(&own, line));
                for format in &formats {
                    assert_same_as_general(format, line);
                }
            }
            // On its own format nearly every line needs no backtracking; if this drops, the
            // fast path stopped working even though the results still agree.
            assert!(decided >= 1990, "{name}: {decided} of 2000");
        }
    }

    use crate::rng::XorShift64 as Rng;

    /// A character boundary of `line`, chosen at random.
    fn boundary(rng: &mut Rng, line: &str) -> usize {
        let mut at = rng.below(line.len() + 1);
        while !line.is_char_boundary(at) {
            at -= 1;
        }
        at
    }

    /// Separators and whitespace (ASCII and not) that make fields and runs ambiguous.
    const NOISE: [&str; 24] = [
        " ", "  ", "\t", "\n", "\r\n", ":", ": ", "[", "]", "(", ")", "-", " - ", ",", "@", "|",
        "\u{a0}", "\u{85}", "\u{3000}", "\u{2028}", "\u{1680}", "é", "\u{1c}", "\0",
    ];

    /// `line` with a few random insertions, deletions, cuts and end padding.
    fn mutate(rng: &mut Rng, line: &str) -> String {
        let mut out = line.to_owned();
        for _ in 0..=rng.below(3) {
            match rng.below(5) {
                0 | 1 => {
                    let at = boundary(rng, &out);
                    out.insert_str(at, NOISE[rng.below(NOISE.len())]);
                }
                2 => {
                    let at = boundary(rng, &out);
                    if let Some(c) = out[at..].chars().next() {
                        out.replace_range(at..at + c.len_utf8(), "");
                    }
                }
                3 => {
                    let at = boundary(rng, &out);
                    out.truncate(at);
                }
                _ => {
                    let pad = NOISE[rng.below(3)];
                    out = if rng.below(2) == 0 {
                        format!("{pad}{out}")
                    } else {
                        format!("{out}{pad}")
                    };
                }
            }
        }
        out
    }

    #[test]
    fn first_choices_equal_the_backtracking_matcher_on_mutated_lines() {
        let formats = all_formats();
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let (mut decided, mut deferred) = (0, 0);
        for (name, spec) in LOGHUB {
            let own = compile(spec);
            let (log, _) = load(name);
            for line in log.lines().step_by(4) {
                let mutated = mutate(&mut rng, line);
                if assert_same_as_general(&own, &mutated) {
                    decided += 1;
                } else {
                    deferred += 1;
                }
                let other = &formats[rng.below(formats.len())];
                assert_same_as_general(other, &mutated);
            }
        }
        // Both outcomes must be exercised.
        assert!(decided > 1000 && deferred > 500, "{decided} {deferred}");
    }

    #[test]
    fn first_choices_equal_the_backtracking_matcher_on_generated_lines() {
        let formats = all_formats();
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let alphabet: Vec<&str> = NOISE
            .iter()
            .copied()
            .chain(["a", "b7", "x", "end", "ü"])
            .collect();
        let mut decided = 0;
        for format in &formats {
            for _ in 0..1500 {
                let line: String = (0..rng.below(16))
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect();
                decided += usize::from(assert_same_as_general(format, &line));
            }
        }
        assert!(decided > 2000, "{decided}");
    }

    #[test]
    fn word_scans_equal_the_byte_scans() {
        let mut rng = Rng::new(0x0123_4567_89ab_cdef);
        let pieces = [
            "a",
            "b",
            " ",
            "\t",
            ":",
            "\u{a0}",
            "\u{3000}",
            "\u{2028}",
            "é",
            "\u{10FFFF}",
            "\u{1f}",
            "!",
            "\u{7f}",
            "\u{c0}",
            "ab:",
        ];
        for _ in 0..3000 {
            let line: String = (0..rng.below(40))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            assert_eq!(
                trim_ends(&line, char::is_whitespace),
                line.trim(),
                "{line:?}"
            );
            for from in (0..=line.len()).filter(|&i| line.is_char_boundary(i)) {
                assert_eq!(
                    scan_whitespace(&line, from),
                    next_whitespace(&line, from),
                    "{line:?} {from}"
                );
                assert_eq!(
                    scan_whitespace_run_end(&line, from),
                    whitespace_run_end(&line, from),
                    "{line:?} {from}"
                );
                for lit in [":", "ab:", "\u{a0}", "é", " :"] {
                    let (&first, rest) = lit.as_bytes().split_first().expect("a literal");
                    assert_eq!(
                        scan_lit(line.as_bytes(), from, first, rest),
                        find_lit(&line, from, lit),
                        "{line:?} {from} {lit:?}"
                    );
                }
            }
        }
    }

    /// [`push_normalized_timestamp`] into a new string.
    fn normalized_timestamp(parts: &[Option<&str>]) -> Option<String> {
        let mut out = String::new();
        push_normalized_timestamp(&mut out, parts).then_some(out)
    }

    fn is_joined_ok(text: &str, parts: &[Option<&str>]) -> bool {
        is_joined(text, parts).is_ok()
    }

    #[test]
    fn keys_rewritten_from_the_first_differing_part_equal_the_join() {
        let keys: [&[Option<&str>]; 12] = [
            &[Some("2016-09-28"), Some("04:30:30")],
            &[Some("2016-09-28"), Some("04:30:31")],
            &[Some("2016-09-28"), Some("04:30:31"), Some("x")],
            &[Some("2016-09-28"), Some("04:30:31")],
            &[Some("2016-09-28 04:30:31")],
            &[Some("2016-09-28"), None, Some("04:30:31")],
            &[Some("2016-09-28"), Some("")],
            &[Some("2016-09-28"), Some(""), Some("")],
            &[Some("2016-09-2"), Some("8")],
            &[Some("é"), Some("ü")],
            &[Some("é"), Some("ü\u{301}")],
            &[],
        ];
        let mut key = String::new();
        for _ in 0..2 {
            for parts in keys {
                if let Err((kept, count)) = is_joined(&key, parts) {
                    key.truncate(kept);
                    push_joined_from(&mut key, parts, count);
                }
                let mut joined = String::new();
                push_joined(&mut joined, parts);
                assert_eq!(key, joined, "{parts:?}");
            }
        }
    }

    #[test]
    fn timestamp_memo_answers_equal_fresh_parses() {
        let fresh = |parts: &[Option<&str>]| {
            let mut text = String::new();
            push_joined(&mut text, parts);
            timestamp::parse(&text).map(|ts| timestamp::to_rfc3339_millis(&ts))
        };
        // Repeats, a change and back, prefixes of the previous key, multi-part keys equal to a
        // single-part one, unparsable text in between, and a date text that starts with the
        // previous one (`2016/9/27` after `2016/9/2`).
        let sequence: [&[Option<&str>]; 14] = [
            &[Some("2016-09-28 04:30:30")],
            &[Some("2016-09-28 04:30:30")],
            &[Some("2016-09-28"), Some("04:30:30")],
            &[Some("2016-09-28"), Some("04:30:31")],
            &[Some("2016-09-28 04:30:30")],
            &[Some("2016-09-28 04:30:3")],
            &[Some("2016-09-28"), Some("04:30:3")],
            &[Some("not a time")],
            &[Some("2016-09-28 04:30:30")],
            &[Some("081109"), Some("203615")],
            &[Some("081109"), Some("203615")],
            &[Some("081109 20"), Some("3615")],
            &[Some("2016/9/2"), Some("20:30:31")],
            &[Some("2016/9/27"), Some("20:30:31")],
        ];
        for _ in 0..2 {
            for parts in sequence {
                assert_eq!(normalized_timestamp(parts), fresh(parts), "{parts:?}");
            }
        }
        // `Date Time` and one-part keys whose date part repeats from line to line (the parser
        // then reads only the time), across midnight, month and year ends and leap days, with
        // shape changes and invalid times and dates right after valid ones of the same day.
        let instants = [
            (2015, 10, 18, 18, 1, 47, 978),
            (2015, 10, 18, 18, 1, 48, 963),
            (2015, 10, 18, 19, 1, 50, 0),
            (2015, 10, 18, 23, 59, 59, 999),
            (2015, 10, 19, 0, 0, 0, 0),
            (2015, 12, 31, 23, 59, 59, 500),
            (2016, 1, 1, 0, 0, 0, 1),
            (2016, 2, 2, 9, 5, 7, 0),
            (2016, 2, 28, 23, 59, 59, 0),
            (2016, 2, 29, 0, 0, 1, 0),
            (2016, 3, 1, 0, 0, 0, 0),
        ];
        let shapes = [
            ("%Y-%m-%d", "%H:%M:%S,%3f"),
            ("%y%m%d", "%H%M%S"),
            ("%y/%m/%d", "%H:%M:%S"),
            ("%Y.%m.%d", "%H.%M.%S%.6f"),
            ("%Y/%-m/%-d", "%H:%M:%S%.3f"),
            ("%Y-%m-%d-%H.%M.%S%.6f", ""),
            ("%s", ""),
        ];
        let mut keys: Vec<Vec<String>> = Vec::new();
        for (y, mo, d, h, mi, s, ms) in instants {
            let Some(at) = chrono::NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|date| date.and_hms_milli_opt(h, mi, s, ms))
            else {
                panic!("{y}-{mo}-{d}");
            };
            for (date_shape, time_shape) in shapes {
                let date = at.format(date_shape).to_string();
                let time = at.format(time_shape).to_string();
                let parts = |time: &str| match time {
                    "" => vec![date.clone()],
                    _ => vec![date.clone(), time.to_owned()],
                };
                keys.push(parts(&time));
                for bad_time in ["25:00:00", "23:60:00", "235959x", &format!("{time}0")] {
                    keys.push(parts(bad_time));
                    keys.push(parts(&time));
                }
                keys.push(vec![format!("{y}-02-30"), time.clone()]);
            }
        }
        let mut parsed = 0;
        for key in &keys {
            let parts: Vec<Option<&str>> = key.iter().map(|part| Some(part.as_str())).collect();
            let fresh = fresh(&parts);
            parsed += usize::from(fresh.is_some());
            assert_eq!(normalized_timestamp(&parts), fresh, "{parts:?}");
        }
        // Half the keys are valid: the comparisons are not all of failures.
        assert!(parsed * 2 >= keys.len(), "{parsed} of {}", keys.len());
        assert!(is_joined_ok("ab c", &[Some("ab"), Some("c")]));
        assert!(!is_joined_ok("abc", &[Some("ab"), Some("c")]));
        assert!(!is_joined_ok("ab c ", &[Some("ab"), Some("c")]));
        assert!(!is_joined_ok("ab", &[Some("ab"), Some("c")]));
        assert!(is_joined_ok(
            "2016-09-28 04:30:30,123",
            &[Some("2016-09-28"), Some("04:30:30,123")]
        ));
        assert!(!is_joined_ok(
            "2016-09-28 04:30:30,124",
            &[Some("2016-09-28"), Some("04:30:30,123")]
        ));
        assert!(!is_joined_ok(
            "2016-09-29 04:30:30,123",
            &[Some("2016-09-28"), Some("04:30:30,123")]
        ));
    }
}

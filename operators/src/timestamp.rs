//! Timestamp recognition: turning the date/time shapes found in log headers into UTC instants.
//!
//! Runs once per log line, so instead of trying dozens of chrono format strings in turn it
//! walks the text once with a byte cursor, choosing the shape from what it sees (a letter
//! first, the length of the first digit run, the separators). Text without a zone is UTC.

use crate::text::trim_ends;
use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, TimeDelta, Timelike,
    Utc,
};

/// Parses a timestamp; shapes without a year (syslog `Dec  4 04:47:44`) get the current year.
pub fn parse(raw: &str) -> Option<DateTime<Utc>> {
    // The clock is read only for year-less shapes: most logs carry a year.
    parse_impl(raw, &|| Utc::now().year())
}

/// Parses a timestamp, using `default_year` for shapes that carry no year.
///
/// Recognised (no zone means UTC):
/// - ISO 8601 / RFC 3339: `2015-10-18T18:01:47.978Z`, `2015-10-18 18:01:47,978 +02:00`,
///   also with `/` or `.` between date parts, and BGL's `2005-06-03-15.42.50.675872`
/// - compact: `20171223-22:15:29:606`, `20150101T120000Z`, HDFS `081109 203615`
/// - two-digit years: Spark `17/06/09 20:10:40`; no year: Android `03-17 16:13:38.811`
/// - day first: `25.12.2017 10:00`, US `12/25/2017 10:00`, access logs
///   `10/Oct/2000:13:55:36 -0700`
/// - month names: ctime `Sun Dec 04 04:47:44 2005`, syslog `Dec  4 04:47:44`,
///   RFC 2822 `Sun, 04 Dec 2005 04:47:44 GMT`
/// - epoch seconds (9–10 digits) or milliseconds (12–13 digits), optionally fractional
pub fn parse_with_year(raw: &str, default_year: i32) -> Option<DateTime<Utc>> {
    parse_impl(raw, &|| default_year)
}

/// The shape dispatch; `default_year` is called only when the text has no year.
fn parse_impl(raw: &str, default_year: &dyn Fn() -> i32) -> Option<DateTime<Utc>> {
    let text = trim(raw);
    let mut cur = Cursor::new(text);
    let first = cur.peek()?;
    if first.is_ascii_alphabetic() {
        return named_month(&mut cur, default_year);
    }
    if !first.is_ascii_digit() {
        return None;
    }
    match cur.digit_run() {
        4 => year_first(&mut cur),
        8 => compact_date(&mut cur),
        6 => short_compact_date(&mut cur),
        1 | 2 => small_number_first(&mut cur, default_year),
        9 | 10 | 12 | 13 => epoch(&mut cur),
        _ => None,
    }
}

/// `raw` without surrounding whitespace and brackets.
fn trim(raw: &str) -> &str {
    trim_ends(raw, |c| c.is_whitespace() || c == '[' || c == ']')
}

/// RFC 3339 UTC with milliseconds (`2015-10-18T18:01:47.978Z`) when recognised, else `raw`.
pub fn normalize(raw: &str) -> String {
    match parse(raw) {
        Some(ts) => to_rfc3339_millis(&ts),
        None => raw.to_owned(),
    }
}

/// The normalised text of an instant: RFC 3339, UTC, milliseconds (`2015-10-18T18:01:47.978Z`).
/// Written digit by digit: this runs per line, and chrono's formatter costs several times more.
pub fn to_rfc3339_millis(ts: &DateTime<Utc>) -> String {
    let mut text = MillisText::new();
    text.set(ts);
    text.text
}

/// The [`to_rfc3339_millis`] text of the last instant given, kept in one buffer: consecutive
/// log lines are mostly on the same day, so then only the time of day is written again, and
/// nothing is allocated.
#[derive(Debug, Clone, Default)]
pub struct MillisText {
    /// The day `text` starts with, when it has the usual 24-byte form.
    day: Option<NaiveDate>,
    text: String,
}

impl MillisText {
    pub const fn new() -> Self {
        MillisText {
            day: None,
            text: String::new(),
        }
    }

    /// Makes the text that of `ts`.
    pub fn set(&mut self, ts: &DateTime<Utc>) {
        // Date and time read once from the naive value: `DateTime`'s accessors re-derive the
        // local time (an offset addition) on every call.
        let naive = ts.naive_utc();
        let (date, time) = (naive.date(), naive.time());
        let millis = (time.nanosecond() / 1_000_000).min(999);
        let time_fields = [
            (time.hour(), 2, b':'),
            (time.minute(), 2, b':'),
            (time.second(), 2, b'.'),
            (millis, 3, b'Z'),
        ];
        if self.day == Some(date) {
            // Keep `yyyy-mm-ddT`.
            self.text.truncate(11);
            push_fields(&mut self.text, time_fields);
            return;
        }
        self.day = None;
        self.text.clear();
        let Ok(year @ 0..=9999) = u32::try_from(date.year()) else {
            self.text
                .push_str(&ts.to_rfc3339_opts(SecondsFormat::Millis, true));
            return;
        };
        // One call for all fields: each call checks its buffer as UTF-8 once.
        let [hour, minute, second, millis] = time_fields;
        push_fields(
            &mut self.text,
            [
                (year, 4, b'-'),
                (date.month(), 2, b'-'),
                (date.day(), 2, b'T'),
                hour,
                minute,
                second,
                millis,
            ],
        );
        self.day = Some(date);
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Appends each (value, digits, separator): the value zero-padded to that many digits (at most
/// 4), then the separator.
fn push_fields<const N: usize>(out: &mut String, fields: [(u32, usize, u8); N]) {
    let mut text = [0u8; 24];
    let mut at = 0;
    for (value, width, sep) in fields {
        let Some(slot) = text.get_mut(at..at + width + 1) else {
            break;
        };
        let mut rest = value;
        for digit in slot[..width].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        slot[width] = sep;
        at += width + 1;
    }
    // Only ASCII digits and separators were written, so this never takes the fallback. One
    // check of the buffer costs less than pushing its bytes one `char` at a time.
    out.push_str(std::str::from_utf8(&text[..at]).unwrap_or_default());
}

/// Minutes since the Unix epoch (floor), the key of per-minute windows.
pub fn minute_of(ts: &DateTime<Utc>) -> i64 {
    ts.timestamp().div_euclid(60)
}

/// A forward-only reader over ASCII bytes; every method fails softly (`None`/`false`).
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            bytes: text.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.pos += usize::from(hit);
        hit
    }

    /// Consumes one of `choices`, returning it.
    fn eat_any(&mut self, choices: &[u8]) -> Option<u8> {
        let byte = self.peek().filter(|b| choices.contains(b))?;
        self.pos += 1;
        Some(byte)
    }

    fn skip_spaces(&mut self) -> usize {
        let start = self.pos;
        while self.peek() == Some(b' ') || self.peek() == Some(b'\t') {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Length of the digit run at the cursor, without consuming it.
    fn digit_run(&self) -> usize {
        self.bytes[self.pos.min(self.bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    }

    /// Consumes exactly `len` digits as a number.
    fn fixed(&mut self, len: usize) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + len)?;
        let mut value = 0u32;
        for &b in digits {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos += len;
        Some(value)
    }

    /// Consumes a whole digit run of `min..=max` digits as a number.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let len = self.digit_run();
        if len < min || len > max {
            return None;
        }
        self.fixed(len)
    }

    /// Consumes a run of ASCII letters.
    fn word(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }
}

/// `yyyy?mm?dd[ time]` with `?` one of `-`, `/`, `.`.
fn year_first(cur: &mut Cursor) -> Option<DateTime<Utc>> {
    let year = cur.fixed(4)?;
    let sep = cur.eat_any(b"-/.")?;
    let month = cur.number(1, 2)?;
    if !cur.eat(sep) {
        return None;
    }
    let day = cur.number(1, 2)?;
    let date = ymd(i64::from(year), month, day)?;
    optional_time(cur, date)
}

/// `yyyyMMdd` followed by a time (a bare eight-digit number is too ambiguous).
fn compact_date(cur: &mut Cursor) -> Option<DateTime<Utc>> {
    let year = cur.fixed(4)?;
    let month = cur.fixed(2)?;
    let day = cur.fixed(2)?;
    let date = ymd(i64::from(year), month, day)?;
    required_time(cur, date)
}

/// HDFS `yyMMdd HHmmss`: a two-digit year, then a time.
fn short_compact_date(cur: &mut Cursor) -> Option<DateTime<Utc>> {
    let year = cur.fixed(2)?;
    let month = cur.fixed(2)?;
    let day = cur.fixed(2)?;
    let date = ymd(full_year(year), month, day)?;
    required_time(cur, date)
}

/// Shapes starting with one or two digits: `yy/mm/dd`, `dd.mm.yyyy`, `mm/dd/yyyy`,
/// `dd/Mon/yyyy:HH:MM:SS`, and year-less `mm-dd time`.
fn small_number_first(cur: &mut Cursor, default_year: &dyn Fn() -> i32) -> Option<DateTime<Utc>> {
    let first = cur.number(1, 2)?;
    let sep = cur.eat_any(b"-/.")?;
    if cur.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        return day_month_name_year(cur, first, sep);
    }
    let second = cur.number(1, 2)?;
    if !cur.eat(sep) {
        let date = ymd(i64::from(default_year()), first, second)?;
        return required_time(cur, date);
    }
    let date = match cur.digit_run() {
        2 => ymd(full_year(first), second, cur.fixed(2)?)?,
        4 if sep == b'/' => ymd(i64::from(cur.fixed(4)?), first, second)?,
        4 => ymd(i64::from(cur.fixed(4)?), second, first)?,
        _ => return None,
    };
    optional_time(cur, date)
}

/// The rest of `dd/Mon/yyyy:HH:MM:SS zone` after `dd/`.
fn day_month_name_year(cur: &mut Cursor, day: u32, sep: u8) -> Option<DateTime<Utc>> {
    let month = month_number(cur.word())?;
    if !cur.eat(sep) {
        return None;
    }
    let year = cur.fixed(4)?;
    let date = ymd(i64::from(year), month, day)?;
    optional_time(cur, date)
}

/// Shapes starting with a word: `[Wkd[,]] Mon dd [yyyy] time [zone] [yyyy]` or
/// `Wkd, dd Mon yyyy time [zone]`. A missing year is `default_year`.
fn named_month(cur: &mut Cursor, default_year: &dyn Fn() -> i32) -> Option<DateTime<Utc>> {
    let mut word = cur.word();
    if is_weekday(word) {
        cur.eat(b',');
        cur.skip_spaces();
        if cur.peek().is_some_and(|b| b.is_ascii_digit()) {
            return day_month_year_time(cur);
        }
        word = cur.word();
    }
    let month = month_number(word)?;
    if cur.skip_spaces() == 0 {
        return None;
    }
    let day = cur.number(1, 2)?;
    if cur.skip_spaces() == 0 {
        return None;
    }
    let mut year = None;
    if cur.digit_run() == 4 && cur.peek_at(4) != Some(b':') {
        year = Some(i64::from(cur.fixed(4)?));
        cur.skip_spaces();
    }
    let time = time_of_day(cur)?;
    let offset = zone(cur)?;
    if year.is_none() && cur.skip_spaces() > 0 && cur.digit_run() == 4 {
        year = Some(i64::from(cur.fixed(4)?));
    }
    let year = year.unwrap_or_else(|| i64::from(default_year()));
    let date = ymd(year, month, day)?;
    finish(cur, date.and_time(time), offset)
}

/// RFC 2822 after the weekday: `dd Mon yyyy HH:MM:SS [zone]`.
fn day_month_year_time(cur: &mut Cursor) -> Option<DateTime<Utc>> {
    let day = cur.number(1, 2)?;
    cur.skip_spaces();
    let month = month_number(cur.word())?;
    cur.skip_spaces();
    let year = cur.fixed(4)?;
    let date = ymd(i64::from(year), month, day)?;
    if cur.skip_spaces() == 0 {
        return None;
    }
    let time = time_of_day(cur)?;
    let offset = zone(cur)?;
    finish(cur, date.and_time(time), offset)
}

/// Epoch seconds (9–10 digits) or milliseconds (12–13 digits), with an optional fraction.
fn epoch(cur: &mut Cursor) -> Option<DateTime<Utc>> {
    let len = cur.digit_run();
    let whole = i64::from(cur.fixed(len.min(9))?);
    let rest_len = len.saturating_sub(9);
    let rest = if rest_len > 0 {
        i64::from(cur.fixed(rest_len)?)
    } else {
        0
    };
    let whole = whole * 10i64.pow(rest_len as u32) + rest;
    let frac_nanos = if cur.eat(b'.') { fraction(cur)? } else { 0 };
    if !cur.at_end() {
        return None;
    }
    let (secs, nanos) = if len <= 10 {
        (whole, frac_nanos)
    } else {
        let millis_nanos = whole.rem_euclid(1000) * 1_000_000 + i64::from(frac_nanos) / 1000;
        (whole.div_euclid(1000), u32::try_from(millis_nanos).ok()?)
    };
    DateTime::from_timestamp(secs, nanos)
}

/// After a date: the end of the text (midnight) or a time.
fn optional_time(cur: &mut Cursor, date: NaiveDate) -> Option<DateTime<Utc>> {
    if cur.at_end() {
        return Some(date.and_time(NaiveTime::MIN).and_utc());
    }
    required_time(cur, date)
}

/// After a date: a separator (`T`, spaces, `-`, `_`, `:`), a time, an optional zone, the end.
fn required_time(cur: &mut Cursor, date: NaiveDate) -> Option<DateTime<Utc>> {
    if cur.skip_spaces() == 0 && cur.eat_any(b"Tt-_:").is_none() {
        return None;
    }
    let time = time_of_day(cur)?;
    let offset = zone(cur)?;
    finish(cur, date.and_time(time), offset)
}

/// `HH:MM[:SS][frac]`, `HH.MM.SS[frac]` or compact `HHMMSS[frac]`; the fraction is introduced
/// by `.`, `,` or `:` (HealthApp writes `22:15:29:606`).
fn time_of_day(cur: &mut Cursor) -> Option<NaiveTime> {
    let (hour, minute, second) = if cur.digit_run() == 6 {
        (cur.fixed(2)?, cur.fixed(2)?, cur.fixed(2)?)
    } else {
        let hour = cur.number(1, 2)?;
        let sep = cur.eat_any(b":.")?;
        let minute = cur.fixed(2)?;
        let second =
            if cur.peek() == Some(sep) && cur.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
                cur.eat(sep);
                cur.fixed(2)?
            } else {
                0
            };
        (hour, minute, second)
    };
    let nanos = if matches!(cur.peek(), Some(b'.' | b',' | b':'))
        && cur.peek_at(1).is_some_and(|b| b.is_ascii_digit())
    {
        cur.pos += 1;
        fraction(cur)?
    } else {
        0
    };
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
}

/// A digit run read as a decimal fraction of a second, in nanoseconds (digits past 9 dropped).
fn fraction(cur: &mut Cursor) -> Option<u32> {
    let len = cur.digit_run();
    if len == 0 {
        return None;
    }
    let used = len.min(9);
    let value = cur.fixed(used)?;
    cur.pos += len - used;
    // A table instead of `10u32.pow`, which loops.
    const SCALE: [u32; 10] = [
        1_000_000_000,
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1_000,
        100,
        10,
        1,
    ];
    Some(value * SCALE.get(used)?)
}

/// An optional zone after a time: `Z`, `UTC`, `GMT`, `±HH[:][MM]` (also after `UTC`/`GMT`),
/// possibly after spaces. Returns the offset east of UTC in seconds; `None` for a bad offset.
/// Unknown zone names are left unconsumed, so [`finish`] rejects them.
fn zone(cur: &mut Cursor) -> Option<i32> {
    let start = cur.pos;
    cur.skip_spaces();
    if cur.eat(b'Z') || cur.eat(b'z') {
        return Some(0);
    }
    let save = cur.pos;
    let name = cur.word();
    if !(name.eq_ignore_ascii_case(b"UTC") || name.eq_ignore_ascii_case(b"GMT")) {
        cur.pos = save;
    }
    let named = cur.pos > save;
    let Some(sign) = cur.eat_any(b"+-") else {
        if !named {
            cur.pos = start;
        }
        return Some(0);
    };
    let hours = cur.fixed(2)?;
    cur.eat(b':');
    let minutes = if cur.digit_run() >= 2 {
        cur.fixed(2)?
    } else {
        0
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    let seconds = i32::try_from(hours * 3600 + minutes * 60).ok()?;
    Some(if sign == b'-' { -seconds } else { seconds })
}

/// Requires the whole text consumed and turns local time at `offset` into UTC.
fn finish(cur: &Cursor, local: NaiveDateTime, offset: i32) -> Option<DateTime<Utc>> {
    if !cur.at_end() {
        return None;
    }
    if offset == 0 {
        // The usual case; chrono's checked subtraction costs more than the rest of a parse.
        return Some(local.and_utc());
    }
    let utc = local.checked_sub_signed(TimeDelta::seconds(i64::from(offset)))?;
    Some(utc.and_utc())
}

fn ymd(year: i64, month: u32, day: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

/// Two-digit years pivot at 70: `08` is 2008, `95` is 1995.
fn full_year(yy: u32) -> i64 {
    let yy = i64::from(yy);
    if yy < 70 {
        2000 + yy
    } else {
        1900 + yy
    }
}

const MONTHS: [&[u8]; 12] = [
    b"january",
    b"february",
    b"march",
    b"april",
    b"may",
    b"june",
    b"july",
    b"august",
    b"september",
    b"october",
    b"november",
    b"december",
];

const WEEKDAYS: [&[u8]; 7] = [
    b"monday",
    b"tuesday",
    b"wednesday",
    b"thursday",
    b"friday",
    b"saturday",
    b"sunday",
];

/// Whether `word` is a full name from `names` or its three-letter abbreviation (`Sept` too).
fn name_index(names: &[&[u8]], word: &[u8]) -> Option<usize> {
    if word.len() < 3 {
        return None;
    }
    names.iter().position(|name| {
        name.eq_ignore_ascii_case(word)
            || (word.len() == 3 && name[..3].eq_ignore_ascii_case(word))
            || (word.len() == 4 && name.len() > 4 && name[..4].eq_ignore_ascii_case(word))
    })
}

fn month_number(word: &[u8]) -> Option<u32> {
    name_index(&MONTHS, word).and_then(|i| u32::try_from(i + 1).ok())
}

fn is_weekday(word: &[u8]) -> bool {
    name_index(&WEEKDAYS, word).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 3339 text of a parse with default year 2020, or `None`.
    fn iso(raw: &str) -> Option<String> {
        parse_with_year(raw, 2020).map(|ts| ts.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    #[test]
    fn iso_8601_and_rfc_3339() {
        let cases = [
            ("2015-10-18T18:01:47.978Z", "2015-10-18T18:01:47.978000Z"),
            ("2015-10-18T18:01:47Z", "2015-10-18T18:01:47.000000Z"),
            ("2015-10-18t18:01:47z", "2015-10-18T18:01:47.000000Z"),
            ("2015-10-18 18:01:47", "2015-10-18T18:01:47.000000Z"),
            ("2015-10-18 18:01:47,978", "2015-10-18T18:01:47.978000Z"),
            (
                "2015-10-18T18:01:47.123456789",
                "2015-10-18T18:01:47.123456Z",
            ),
            (
                "2015-10-18T18:01:47.1234567891234",
                "2015-10-18T18:01:47.123456Z",
            ),
            ("2015-10-18T18:01:47+02:00", "2015-10-18T16:01:47.000000Z"),
            ("2015-10-18T18:01:47.5-0130", "2015-10-18T19:31:47.500000Z"),
            ("2015-10-18T01:01:47+05", "2015-10-17T20:01:47.000000Z"),
            ("2015-10-18 18:01:47 UTC", "2015-10-18T18:01:47.000000Z"),
            (
                "2015-10-18 18:01:47 GMT+01:00",
                "2015-10-18T17:01:47.000000Z",
            ),
            ("2015-10-18 18:01", "2015-10-18T18:01:00.000000Z"),
            ("2015-10-18", "2015-10-18T00:00:00.000000Z"),
            ("2015/10/18 18:01:47", "2015-10-18T18:01:47.000000Z"),
            ("2005.06.03", "2005-06-03T00:00:00.000000Z"),
            ("2005.11.09 12:01:01", "2005-11-09T12:01:01.000000Z"),
            ("2016/9/27 20:30:31.455", "2016-09-27T20:30:31.455000Z"),
            ("  [2015-10-18 18:01:47]  ", "2015-10-18T18:01:47.000000Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(iso(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn loghub_shapes() {
        let cases = [
            // BGL
            ("2005-06-03-15.42.50.675872", "2005-06-03T15:42:50.675872Z"),
            // HDFS
            ("081109 203615", "2008-11-09T20:36:15.000000Z"),
            // Spark
            ("17/06/09 20:10:40", "2017-06-09T20:10:40.000000Z"),
            // Apache
            ("Sun Dec 04 04:47:44 2005", "2005-12-04T04:47:44.000000Z"),
            // Hadoop / Zookeeper after joining Date and Time
            ("2015-07-29 17:41:44,747", "2015-07-29T17:41:44.747000Z"),
            // HPC and BGL epoch seconds
            ("1077804742", "2004-02-26T14:12:22.000000Z"),
            // HealthApp
            ("20171223-22:15:29:606", "2017-12-23T22:15:29.606000Z"),
            // Android (no year)
            ("03-17 16:13:38.811", "2020-03-17T16:13:38.811000Z"),
            // Proxifier (no year)
            ("10.30 16:49:06", "2020-10-30T16:49:06.000000Z"),
            // Linux / Mac syslog (no year)
            ("Jun 14 15:16:01", "2020-06-14T15:16:01.000000Z"),
            ("Jul  1 09:00:55", "2020-07-01T09:00:55.000000Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(iso(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn month_name_shapes() {
        let cases = [
            (
                "Sun Dec  4 04:47:44 UTC 2005",
                "2005-12-04T04:47:44.000000Z",
            ),
            (
                "sunday december 4 04:47:44 2005",
                "2005-12-04T04:47:44.000000Z",
            ),
            ("Dec 04 2005 04:47:44", "2005-12-04T04:47:44.000000Z"),
            (
                "Sun, 04 Dec 2005 04:47:44 +0100",
                "2005-12-04T03:47:44.000000Z",
            ),
            (
                "Sun, 04 Dec 2005 04:47:44 GMT",
                "2005-12-04T04:47:44.000000Z",
            ),
            ("Sept 4 04:47:44.25", "2020-09-04T04:47:44.250000Z"),
            ("10/Oct/2000:13:55:36 -0700", "2000-10-10T20:55:36.000000Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(iso(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn day_first_and_us_dates() {
        assert_eq!(
            iso("25.12.2017 10:00").as_deref(),
            Some("2017-12-25T10:00:00.000000Z")
        );
        assert_eq!(
            iso("12/25/2017 10:00:01").as_deref(),
            Some("2017-12-25T10:00:01.000000Z")
        );
    }

    #[test]
    fn epochs() {
        let cases = [
            ("1117838570", "2005-06-03T22:42:50.000000Z"),
            ("999999999", "2001-09-09T01:46:39.000000Z"),
            ("1117838570.25", "2005-06-03T22:42:50.250000Z"),
            ("1117838570123", "2005-06-03T22:42:50.123000Z"),
            ("1117838570123.5", "2005-06-03T22:42:50.123500Z"),
            ("111783857012", "1973-07-17T19:04:17.012000Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(iso(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn rejects_non_timestamps() {
        let cases = [
            "",
            "   ",
            "[]",
            "hello",
            "12345",
            "12345678901",
            "081109",
            "20171223",
            "2015-13-01",
            "2015-02-30 10:00:00",
            "2015-10-18 24:00:00",
            "2015-10-18 18:61:00",
            "2015-10-18 18:01:47 CET",
            "2015-10-18 18:01:47 +25:00",
            "2015-10-18 18:01:47 trailing",
            "2015-10-18T",
            "2015-10-18-",
            "2015-10/18",
            "Dec 04",
            "Foo 04 04:47:44",
            "Dec04 04:47:44",
            "1117838570.",
            "1117838570x",
            "17/06",
            "17/06/09/",
        ];
        for raw in cases {
            assert_eq!(iso(raw), None, "{raw}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "é",
            "2015-10-18T18:01:47.978Zé",
            "２０１５-10-18",
            "2015-10-18 18:01:47.",
            "2015-10-18 18:01:47,",
            "9999-12-31T23:59:59.999999999-23:59",
            "0000-01-01T00:00:00+23:59",
            "\u{0}",
            "99/99/99",
            "00/00/00 00:00:00",
            "Dec 99 99:99:99",
            "Sun, ",
            "Sun,",
            "Sun, 4",
            "-1",
            "+1",
            "1:",
            "12:",
            "T",
            "1/Dec/",
            "1/Dec/2005:",
            "9999999999999.9999999999999999",
            "99999999999999999999",
            ":::::",
            "2015-10-18 18:01:47 +",
            "2015-10-18 18:01:47 +1",
            "2015-10-18 18:01:47 GMT+",
        ];
        for raw in odd {
            let _ = parse_with_year(raw, 2020);
            let _ = normalize(raw);
            for cut in 0..raw.len() {
                if let Some(prefix) = raw.get(..cut) {
                    let _ = parse_with_year(prefix, i32::MAX);
                }
            }
        }
        // Every prefix of every recognised shape, with a max default year.
        for raw in [
            "2005-06-03-15.42.50.675872",
            "Sun Dec 04 04:47:44 2005",
            "03-17 16:13:38.811",
        ] {
            for cut in 0..=raw.len() {
                let _ = parse_with_year(&raw[..cut], i32::MAX);
            }
        }
    }

    #[test]
    fn normalize_to_millis_or_keeps_raw() {
        assert_eq!(
            normalize("2015-10-18 18:01:47,978"),
            "2015-10-18T18:01:47.978Z"
        );
        assert_eq!(normalize("081109 203615"), "2008-11-09T20:36:15.000Z");
        assert_eq!(normalize("1117838570"), "2005-06-03T22:42:50.000Z");
        assert_eq!(
            normalize("2015-10-18T18:01:47.9789Z"),
            "2015-10-18T18:01:47.978Z"
        );
        assert_eq!(normalize("not a time"), "not a time");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn millis_text_matches_chrono() {
        let cases = [
            (0, 0),
            (1_445_191_307, 978_000_000),
            (1_445_191_307, 999_999_999),
            (-1, 1_000_000),
            (253_402_300_799, 999_000_000),
            (-62_167_219_200, 0),
            (253_402_300_800, 0),
            (-62_167_219_201, 0),
        ];
        for (secs, nanos) in cases {
            let Some(ts) = DateTime::from_timestamp(secs, nanos) else {
                panic!("{secs}");
            };
            let chrono = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(to_rfc3339_millis(&ts), chrono, "{secs}");
        }
        let ts = DateTime::from_timestamp(1_445_191_307, 978_000_000);
        assert_eq!(
            ts.map(|t| to_rfc3339_millis(&t)).as_deref(),
            Some("2015-10-18T18:01:47.978Z")
        );
    }

    #[test]
    fn kept_millis_text_equals_chrono() {
        // Same day, next day, out of range and back, a day repeated after another one.
        let sequence = [
            (1_445_191_307, 978_000_000),
            (1_445_191_308, 0),
            (1_445_191_308, 999_999_999),
            (1_445_212_799, 500_000_000),
            (1_445_212_800, 1_000_000),
            (253_402_300_800, 0),
            (253_402_300_800, 0),
            (1_445_212_801, 0),
            (-62_167_219_201, 0),
            (-62_167_219_200, 0),
            (0, 0),
            (1_445_191_307, 978_000_000),
            (0, 5_000_000),
        ];
        let mut kept = MillisText::new();
        for (secs, nanos) in sequence {
            let Some(ts) = DateTime::from_timestamp(secs, nanos) else {
                panic!("{secs}");
            };
            kept.set(&ts);
            let chrono = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(kept.as_str(), chrono, "{secs}");
        }
    }

    #[test]
    fn year_less_shapes_use_the_current_year_in_parse() {
        let year = Utc::now().year();
        let got = parse("Jun 14 15:16:01").map(|ts| ts.year());
        // Around New Year the clock may tick between the two calls.
        assert!(got == Some(year) || got == Some(year + 1), "{got:?}");
    }

    #[test]
    fn minutes_floor_towards_minus_infinity() {
        let at = |secs| DateTime::from_timestamp(secs, 0).map(|ts| minute_of(&ts));
        assert_eq!(at(0), Some(0));
        assert_eq!(at(59), Some(0));
        assert_eq!(at(60), Some(1));
        assert_eq!(at(1117838570), Some(18630642));
        assert_eq!(at(-1), Some(-1));
        assert_eq!(at(-60), Some(-1));
        assert_eq!(at(-61), Some(-2));
    }
}

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

/// Parses timestamps one after another, each as [`parse`] would, reusing what the previous
/// ones gave: consecutive log lines are mostly on the same day, so a text that starts with the
/// date text of an earlier one has only its time read, and epoch seconds on the day of the
/// last ones reuse its calendar date.
#[derive(Debug, Clone, Default)]
pub struct Parser {
    /// The date text of the last text that started with a reusable one.
    date: Option<DateText>,
    /// The day number (days since the epoch) and calendar date of the last epoch timestamp.
    epoch_day: Option<(i64, NaiveDate)>,
}

impl Parser {
    pub const fn new() -> Self {
        Parser {
            date: None,
            epoch_day: None,
        }
    }

    /// [`parse`] of `raw`.
    pub fn parse(&mut self, raw: &str) -> Option<DateTime<Utc>> {
        self.parse_with(raw, &|| Utc::now().year())
    }

    /// [`parse_impl`] of `raw`, remembering its date or epoch day for the next texts.
    fn parse_with(&mut self, raw: &str, default_year: &dyn Fn() -> i32) -> Option<DateTime<Utc>> {
        let text = trim(raw);
        let mut cur = Cursor::new(text);
        if let Some(known) = self.date.as_ref().filter(|known| known.starts(text)) {
            cur.pos = known.len;
            return known.after.read(&mut cur, known.date);
        }
        match head(&mut cur, default_year)? {
            Head::Date(date, after) => {
                if let Some(known) = DateText::new(text, cur.pos, date, after) {
                    self.date = Some(known);
                }
                after.read(&mut cur, date)
            }
            Head::Epoch(secs, nanos) => self.epoch(secs, nanos),
            Head::Whole(ts) => ts,
        }
    }

    /// `DateTime::from_timestamp(secs, nanos)`, deriving the calendar date only for a new day.
    fn epoch(&mut self, secs: i64, nanos: u32) -> Option<DateTime<Utc>> {
        const DAY: i64 = 86_400;
        let (day, of_day) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
        let date = match self.epoch_day {
            Some((known, date)) if known == day => date,
            _ => {
                // `DateTime::from_timestamp(secs - of_day, 0)?.date_naive()` without its time
                // and UTC offset steps. 719,163 is the day number of 1970-01-01 from 0001-01-01.
                let from_ce = i32::try_from(day.checked_add(719_163)?).ok()?;
                let date = NaiveDate::from_num_days_from_ce_opt(from_ce)?;
                self.epoch_day = Some((day, date));
                date
            }
        };
        let of_day = u32::try_from(of_day).ok()?;
        let time = NaiveTime::from_num_seconds_from_midnight_opt(of_day, nanos)?;
        Some(date.and_time(time).and_utc())
    }
}

/// The longest date text [`Parser`] keeps (`10/September/2000` is 17 bytes).
const DATE_TEXT_MAX: usize = 24;

/// The date text a timestamp started with, and the date and continuation its [`Head`] gave.
#[derive(Debug, Clone)]
struct DateText {
    bytes: [u8; DATE_TEXT_MAX],
    len: usize,
    date: NaiveDate,
    after: After,
}

impl DateText {
    /// The first `len` bytes of `text`, a date text that gave `date`; `None` when too long or
    /// followed by a digit (see [`DateText::starts`]).
    fn new(text: &str, len: usize, date: NaiveDate, after: After) -> Option<Self> {
        let text = text.as_bytes();
        if text.get(len).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let mut bytes = [0; DATE_TEXT_MAX];
        bytes.get_mut(..len)?.copy_from_slice(text.get(..len)?);
        Some(DateText {
            bytes,
            len,
            date,
            after,
        })
    }

    /// Whether `text` starts with this date text and [`head`] would read it the same way: it
    /// looks at one byte past a date, to see that the last digit run has ended
    /// (`2016/9/2 10:00` and `2016/9/27 10:00` share a prefix but not a date).
    fn starts(&self, text: &str) -> bool {
        let text = text.as_bytes();
        text.get(..self.len)
            .zip(self.bytes.get(..self.len))
            .is_some_and(|(head, known)| same_bytes(head, known))
            && !text.get(self.len).is_some_and(u8::is_ascii_digit)
    }
}

/// Whether `a` and `b` are equal. Timestamp texts are short: up to 16 bytes are compared as
/// two overlapping words, cheaper than the `memcmp` call a slice comparison makes.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let word =
        |bytes: &[u8], at: usize| -> Option<[u8; 8]> { bytes.get(at..at + 8)?.try_into().ok() };
    match a.len() {
        len if len != b.len() => false,
        len @ 8..=16 => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
        0..=7 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

/// The shape dispatch; `default_year` is called only when the text has no year.
fn parse_impl(raw: &str, default_year: &dyn Fn() -> i32) -> Option<DateTime<Utc>> {
    let mut cur = Cursor::new(trim(raw));
    match head(&mut cur, default_year)? {
        Head::Date(date, after) => after.read(&mut cur, date),
        Head::Epoch(secs, nanos) => DateTime::from_timestamp(secs, nanos),
        Head::Whole(ts) => ts,
    }
}

/// What a timestamp starts with, as far as its shape lets it be split.
enum Head {
    /// A date, ending at the cursor, that the rest of the text cannot change: the same date
    /// text followed by anything but a digit gives this date and continuation.
    Date(NaiveDate, After),
    /// The whole text was epoch seconds and nanoseconds.
    Epoch(i64, u32),
    /// The whole text was read: shapes whose year follows the time or comes from the clock.
    Whole(Option<DateTime<Utc>>),
}

/// What may follow a date.
#[derive(Debug, Clone, Copy)]
enum After {
    /// The end of the text (midnight) or a time.
    OptionalTime,
    RequiredTime,
}

impl After {
    fn read(self, cur: &mut Cursor, date: NaiveDate) -> Option<DateTime<Utc>> {
        match self {
            After::OptionalTime => optional_time(cur, date),
            After::RequiredTime => required_time(cur, date),
        }
    }
}

/// Chooses the shape from the first byte and the length of the first digit run.
fn head(cur: &mut Cursor, default_year: &dyn Fn() -> i32) -> Option<Head> {
    let first = cur.peek()?;
    if first.is_ascii_alphabetic() {
        return Some(Head::Whole(named_month(cur, default_year)));
    }
    if !first.is_ascii_digit() {
        return None;
    }
    let (run, value) = cur.peek_number();
    match run {
        4 => year_first(cur),
        8 => compact_date(cur),
        6 => short_compact_date(cur),
        1 | 2 => small_number_first(cur, default_year),
        9 | 10 | 12 | 13 => epoch(cur, run, value),
        _ => None,
    }
}

/// `raw` without surrounding whitespace and brackets.
fn trim(raw: &str) -> &str {
    // Decided on the end bytes first: the usual text starts and ends with a digit or letter.
    let settled = |b: &u8| b.is_ascii_alphanumeric();
    match raw.as_bytes() {
        [first, .., last] if settled(first) && settled(last) => raw,
        _ => trim_ends(raw, |c| c.is_whitespace() || c == '[' || c == ']'),
    }
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
/// log lines are mostly on the same day, often in the same minute, so then only the time of
/// day or the seconds are written again, and nothing is allocated.
#[derive(Debug, Clone, Default)]
pub struct MillisText {
    /// The day `text` starts with, when it has the usual 24-byte form.
    day: Option<NaiveDate>,
    /// The minute of that day `text` has, when it has a day.
    minute: Option<u32>,
    text: String,
}

impl MillisText {
    pub const fn new() -> Self {
        MillisText {
            day: None,
            minute: None,
            text: String::new(),
        }
    }

    /// Makes the text that of `ts`.
    pub fn set(&mut self, ts: &DateTime<Utc>) {
        // Date and time read once from the naive value: `DateTime`'s accessors re-derive the
        // local time (an offset addition) on every call.
        let naive = ts.naive_utc();
        let (date, time) = (naive.date(), naive.time());
        if self.day != Some(date) && !self.set_day(date) {
            self.text
                .push_str(&ts.to_rfc3339_opts(SecondsFormat::Millis, true));
            return;
        }
        // A leap second's fraction runs past 1 s; its text stays at `59.999`.
        let (seconds, millis) = (
            time.num_seconds_from_midnight(),
            time.nanosecond() / 1_000_000,
        );
        let minute = seconds / 60;
        let text = &mut self.text;
        if self.minute == Some(minute) {
            // Keep `yyyy-mm-ddTHH:MM:`.
            text.truncate(17);
        } else {
            // Keep `yyyy-mm-ddT`.
            text.truncate(11);
            push_entry::<3>(text, COLON_PAIRS, minute / 60);
            push_entry::<3>(text, COLON_PAIRS, minute % 60);
            self.minute = Some(minute);
        }
        push_entry::<3>(text, DOT_PAIRS, seconds % 60);
        push_entry::<4>(text, MILLIS_Z, millis.min(999));
    }

    /// Makes the text `yyyy-mm-ddT` of `date`, or empty and `false` for a year outside
    /// 0..=9999, which RFC 3339 writes otherwise.
    fn set_day(&mut self, date: NaiveDate) -> bool {
        self.day = None;
        self.minute = None;
        self.text.clear();
        let Ok(year @ 0..=9999) = u32::try_from(date.year()) else {
            return false;
        };
        let text = &mut self.text;
        push_digits::<4>(text, year);
        text.push('-');
        push_digits::<2>(text, date.month());
        text.push('-');
        push_digits::<2>(text, date.day());
        text.push('T');
        self.day = Some(date);
        true
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Appends entry `index` of `table`, whose entries are `W` bytes long: one copy of a known
/// size, where writing the digits and separators one by one costs several times more.
/// Nothing for an index past the table (callers' values are in range).
fn push_entry<const W: usize>(out: &mut String, table: &str, index: u32) {
    let Ok(at) = usize::try_from(index) else {
        return;
    };
    if let Some(entry) = table.get(at * W..at * W + W) {
        out.push_str(entry);
    }
}

/// `00:`, `01:`, … `99:`: two digits and the separator after them.
const COLON_PAIRS: &str = ascii(&digit_table::<300>(2, b':'));
/// `00.`, `01.`, … `99.`.
const DOT_PAIRS: &str = ascii(&digit_table::<300>(2, b'.'));
/// `000Z`, `001Z`, … `999Z`: millis and the zone that ends the text.
const MILLIS_Z: &str = ascii(&digit_table::<4000>(3, b'Z'));

/// The numbers from 0, each as `digits` zero-padded digits then `suffix`, as many as fit in
/// `LEN` bytes. Evaluated at compile time.
const fn digit_table<const LEN: usize>(digits: usize, suffix: u8) -> [u8; LEN] {
    let mut table = [0; LEN];
    let width = digits + 1;
    let mut number = 0;
    while (number + 1) * width <= LEN {
        let mut rest = number;
        let mut at = digits;
        while at > 0 {
            at -= 1;
            table[number * width + at] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        table[number * width + digits] = suffix;
        number += 1;
    }
    table
}

/// `bytes` as text; evaluated at compile time, where non-UTF-8 stops the build.
const fn ascii(bytes: &'static [u8]) -> &'static str {
    match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(_) => panic!("not UTF-8"),
    }
}

/// Appends the last `N` decimal digits of `value`, zero-padded. Pushed as `char`s known to be
/// ASCII, which needs neither a UTF-8 check of a buffer nor a copy.
fn push_digits<const N: usize>(out: &mut String, value: u32) {
    let mut digits = [0u8; N];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = (rest % 10) as u8;
        rest /= 10;
    }
    for digit in digits {
        out.push(char::from(b'0' + digit));
    }
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

    /// The length of the digit run at the cursor and its value (meaningless past 18 digits),
    /// without consuming it: one pass where a shape needs both.
    fn peek_number(&self) -> (usize, i64) {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let mut value = 0i64;
        for (len, &b) in rest.iter().enumerate() {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return (len, value);
            }
            value = value.wrapping_mul(10).wrapping_add(i64::from(digit));
        }
        (rest.len(), value)
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
fn year_first(cur: &mut Cursor) -> Option<Head> {
    let year = cur.fixed(4)?;
    let sep = cur.eat_any(b"-/.")?;
    let month = cur.number(1, 2)?;
    if !cur.eat(sep) {
        return None;
    }
    let day = cur.number(1, 2)?;
    let date = ymd(i64::from(year), month, day)?;
    Some(Head::Date(date, After::OptionalTime))
}

/// `yyyyMMdd` followed by a time (a bare eight-digit number is too ambiguous).
fn compact_date(cur: &mut Cursor) -> Option<Head> {
    let year = cur.fixed(4)?;
    let month = cur.fixed(2)?;
    let day = cur.fixed(2)?;
    let date = ymd(i64::from(year), month, day)?;
    Some(Head::Date(date, After::RequiredTime))
}

/// HDFS `yyMMdd HHmmss`: a two-digit year, then a time.
fn short_compact_date(cur: &mut Cursor) -> Option<Head> {
    let year = cur.fixed(2)?;
    let month = cur.fixed(2)?;
    let day = cur.fixed(2)?;
    let date = ymd(full_year(year), month, day)?;
    Some(Head::Date(date, After::RequiredTime))
}

/// Shapes starting with one or two digits: `yy/mm/dd`, `dd.mm.yyyy`, `mm/dd/yyyy`,
/// `dd/Mon/yyyy:HH:MM:SS`, and year-less `mm-dd time`.
fn small_number_first(cur: &mut Cursor, default_year: &dyn Fn() -> i32) -> Option<Head> {
    let first = cur.number(1, 2)?;
    let sep = cur.eat_any(b"-/.")?;
    if cur.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
        return day_month_name_year(cur, first, sep);
    }
    let second = cur.number(1, 2)?;
    if !cur.eat(sep) {
        // The year comes from the clock, so the date is not one a later text may reuse.
        let date = ymd(i64::from(default_year()), first, second)?;
        return Some(Head::Whole(required_time(cur, date)));
    }
    let date = match cur.digit_run() {
        2 => ymd(full_year(first), second, cur.fixed(2)?)?,
        4 if sep == b'/' => ymd(i64::from(cur.fixed(4)?), first, second)?,
        4 => ymd(i64::from(cur.fixed(4)?), second, first)?,
        _ => return None,
    };
    Some(Head::Date(date, After::OptionalTime))
}

/// The rest of `dd/Mon/yyyy:HH:MM:SS zone` after `dd/`.
fn day_month_name_year(cur: &mut Cursor, day: u32, sep: u8) -> Option<Head> {
    let month = month_number(cur.word())?;
    if !cur.eat(sep) {
        return None;
    }
    let year = cur.fixed(4)?;
    let date = ymd(i64::from(year), month, day)?;
    Some(Head::Date(date, After::OptionalTime))
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

/// Epoch seconds (9–10 digits) or milliseconds (12–13 digits), with an optional fraction;
/// the digit run at the cursor is `len` long and has the value `whole`.
fn epoch(cur: &mut Cursor, len: usize, whole: i64) -> Option<Head> {
    cur.pos += len;
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
    Some(Head::Epoch(secs, nanos))
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
    let (hour, minute, second) = match usual_clock(cur) {
        Some(hms) => hms,
        None => any_clock(cur)?,
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

/// The usual layouts `HH:MM:SS`, `HH.MM.SS` and `HHMMSS` (then no digit) read at fixed
/// positions, as [`any_clock`] reads them but without its digit scans. `None` (nothing
/// consumed) for any other text.
fn usual_clock(cur: &mut Cursor) -> Option<(u32, u32, u32)> {
    let rest = cur.bytes.get(cur.pos..)?;
    let (hms, len) = match *rest {
        [h1, h2, sep @ (b':' | b'.'), m1, m2, sep2, s1, s2, ..] if sep2 == sep => {
            ((pair(h1, h2)?, pair(m1, m2)?, pair(s1, s2)?), 8)
        }
        [h1, h2, m1, m2, s1, s2, ..] if !rest.get(6).is_some_and(u8::is_ascii_digit) => {
            ((pair(h1, h2)?, pair(m1, m2)?, pair(s1, s2)?), 6)
        }
        _ => return None,
    };
    cur.pos += len;
    Some(hms)
}

/// The value of two ASCII digits.
fn pair(tens: u8, ones: u8) -> Option<u32> {
    let (tens, ones) = (tens.wrapping_sub(b'0'), ones.wrapping_sub(b'0'));
    (tens < 10 && ones < 10).then(|| u32::from(tens * 10 + ones))
}

/// Hours, minutes and seconds of `HH:MM[:SS]`, `HH.MM.SS`, or compact `HHMMSS`.
fn any_clock(cur: &mut Cursor) -> Option<(u32, u32, u32)> {
    if cur.digit_run() == 6 {
        return Some((cur.fixed(2)?, cur.fixed(2)?, cur.fixed(2)?));
    }
    let hour = cur.number(1, 2)?;
    let sep = cur.eat_any(b":.")?;
    let minute = cur.fixed(2)?;
    let second = if cur.peek() == Some(sep) && cur.peek_at(1).is_some_and(|b| b.is_ascii_digit()) {
        cur.eat(sep);
        cur.fixed(2)?
    } else {
        0
    };
    Some((hour, minute, second))
}

/// A digit run read as a decimal fraction of a second, in nanoseconds (digits past 9 dropped).
/// One pass: the run is read as it is measured.
fn fraction(cur: &mut Cursor) -> Option<u32> {
    // The usual millis first: three digits read at fixed positions, then no digit.
    if let Some(&[a, b, c]) = cur.bytes.get(cur.pos..cur.pos + 3) {
        let next_is_digit = cur.bytes.get(cur.pos + 3).is_some_and(u8::is_ascii_digit);
        if let (Some(tens), Some(ones), false) = (pair(a, b), pair(b'0', c), next_is_digit) {
            cur.pos += 3;
            return Some((tens * 10 + ones) * 1_000_000);
        }
    }
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
    let start = cur.pos;
    let (mut value, mut used) = (0u32, 0);
    while let Some(digit) = cur.peek().map(|b| b.wrapping_sub(b'0')).filter(|d| *d < 10) {
        if used < 9 {
            value = value * 10 + u32::from(digit);
            used += 1;
        }
        cur.pos += 1;
    }
    if cur.pos == start {
        return None;
    }
    Some(value * SCALE.get(used)?)
}

/// An optional zone after a time: `Z`, `UTC`, `GMT`, `±HH[:][MM]` (also after `UTC`/`GMT`),
/// possibly after spaces. Returns the offset east of UTC in seconds; `None` for a bad offset.
/// Unknown zone names are left unconsumed, so [`finish`] rejects them.
fn zone(cur: &mut Cursor) -> Option<i32> {
    if cur.at_end() {
        // The usual case, decided without the probes below.
        return Some(0);
    }
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

/// The first three bytes of `word`, lowercased: every form of a name that [`is_form_of`]
/// accepts shares them with the name, and no two months or weekdays share them.
fn stem(word: &[u8]) -> Option<[u8; 3]> {
    let [a, b, c, ..] = *word else {
        return None;
    };
    Some([a, b, c].map(|byte| byte.to_ascii_lowercase()))
}

/// Whether `word` is the full `name` (lowercase) or its three-letter abbreviation (`Sept`
/// too), given that it starts with the name's [`stem`].
fn is_form_of(name: &[u8], word: &[u8]) -> bool {
    word.len() == 3
        || name.eq_ignore_ascii_case(word)
        || (word.len() == 4 && name.len() > 4 && name[..4].eq_ignore_ascii_case(word))
}

/// The month (1–12) `word` names. The stem is matched as a literal, a few byte comparisons,
/// where a scan of the names costs a comparison per name.
fn month_number(word: &[u8]) -> Option<u32> {
    let index: u32 = match &stem(word)? {
        b"jan" => 0,
        b"feb" => 1,
        b"mar" => 2,
        b"apr" => 3,
        b"may" => 4,
        b"jun" => 5,
        b"jul" => 6,
        b"aug" => 7,
        b"sep" => 8,
        b"oct" => 9,
        b"nov" => 10,
        b"dec" => 11,
        _ => return None,
    };
    let name = MONTHS.get(usize::try_from(index).ok()?)?;
    is_form_of(name, word).then_some(index + 1)
}

fn is_weekday(word: &[u8]) -> bool {
    let Some(stem) = stem(word) else {
        return false;
    };
    let index = match &stem {
        b"mon" => 0,
        b"tue" => 1,
        b"wed" => 2,
        b"thu" => 3,
        b"fri" => 4,
        b"sat" => 5,
        b"sun" => 6,
        _ => return false,
    };
    WEEKDAYS
        .get(index)
        .is_some_and(|name| is_form_of(name, word))
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
    fn kept_millis_text_equals_chrono_within_a_day() {
        // Same second, same minute, next second, next minute, the same minute of the next hour
        // and of the next day, the same second of another minute and of the next day, back to
        // an earlier minute and second.
        let times = [
            (0, 0, 0, 5),
            (18, 5, 1, 978),
            (18, 5, 1, 979),
            (18, 5, 1, 979),
            (18, 5, 1, 0),
            (18, 6, 1, 0),
            (19, 6, 1, 0),
            (18, 5, 1, 999),
            (18, 5, 2, 0),
            (18, 5, 59, 999),
            (18, 6, 0, 0),
            (19, 6, 0, 1),
            (19, 6, 0, 1),
            (19, 5, 30, 500),
            (23, 59, 59, 999),
            (0, 0, 0, 0),
        ];
        let mut kept = MillisText::new();
        for day in [18, 19, 18] {
            for (h, m, s, ms) in times {
                let Some(ts) = NaiveDate::from_ymd_opt(2015, 10, day)
                    .and_then(|date| date.and_hms_milli_opt(h, m, s, ms))
                    .map(|naive| naive.and_utc())
                else {
                    panic!("{day} {h}:{m}:{s}.{ms}");
                };
                kept.set(&ts);
                let chrono = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
                assert_eq!(kept.as_str(), chrono);
            }
        }
    }

    /// Instants whose consecutive texts stay within a minute, a day, and cross midnight, month
    /// and year ends, leap days, and the two-digit-year pivot.
    fn instants() -> Vec<NaiveDateTime> {
        let at = |y, mo, d, h, mi, s, nanos| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|date| date.and_hms_nano_opt(h, mi, s, nanos))
                .unwrap_or_else(|| panic!("{y}-{mo}-{d} {h}:{mi}:{s}"))
        };
        vec![
            at(2015, 10, 18, 18, 1, 47, 978_123_456),
            at(2015, 10, 18, 18, 1, 47, 979_000_000),
            at(2015, 10, 18, 18, 1, 48, 5_000_000),
            at(2015, 10, 18, 18, 2, 0, 0),
            at(2015, 10, 18, 19, 2, 1, 100_000_000),
            at(2015, 10, 18, 23, 59, 59, 999_999_999),
            at(2015, 10, 19, 0, 0, 0, 0),
            at(2015, 10, 31, 23, 59, 59, 500_000_000),
            at(2015, 11, 1, 0, 0, 1, 0),
            at(2015, 12, 31, 23, 59, 59, 999_000_000),
            at(2016, 1, 1, 0, 0, 0, 1_000_000),
            at(2016, 2, 2, 9, 5, 7, 0),
            at(2016, 2, 27, 9, 5, 7, 0),
            at(2016, 2, 28, 23, 59, 59, 0),
            at(2016, 2, 29, 0, 0, 0, 0),
            at(2016, 2, 29, 12, 30, 45, 250_000_000),
            at(2016, 3, 1, 0, 0, 0, 0),
            at(2015, 2, 28, 23, 59, 59, 0),
            at(2015, 3, 1, 0, 0, 0, 0),
            at(2000, 2, 29, 1, 2, 3, 4_000_000),
            at(2069, 12, 31, 23, 59, 59, 0),
            at(2070, 1, 1, 0, 0, 0, 0),
            at(2001, 9, 9, 1, 46, 40, 0),
        ]
    }

    /// chrono formats of every accepted shape: zones, fractions, padding, brackets.
    const SHAPES: [&str; 38] = [
        "%Y-%m-%d %H:%M:%S,%3f",
        "%Y-%m-%dT%H:%M:%S%.9fZ",
        "%Y-%m-%dt%H:%M:%Sz",
        "%Y-%m-%dT%H:%M:%S%.3f+02:00",
        "%Y-%m-%dT%H:%M:%S-0130",
        "%Y-%m-%dT%H:%M:%S+05",
        "%Y-%m-%d %H:%M:%S UTC",
        "%Y-%m-%d %H:%M:%S GMT+01:00",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %-H:%M:%S",
        "%Y-%m-%d",
        "%Y/%m/%d %H:%M:%S",
        "%Y.%m.%d %H:%M:%S",
        "%Y.%m.%d",
        "%Y/%-m/%-d %H:%M:%S%.3f",
        "%Y-%m-%d-%H.%M.%S%.6f",
        "[%Y-%m-%d %H:%M:%S]",
        "%Y%m%d-%H:%M:%S:%3f",
        "%Y%m%dT%H%M%SZ",
        "%Y%m%d %H%M%S",
        "%y%m%d %H%M%S",
        "%y/%m/%d %H:%M:%S",
        "%d.%m.%Y %H:%M",
        "%-d.%-m.%Y %H:%M",
        "%m/%d/%Y %H:%M:%S",
        "%d/%b/%Y:%H:%M:%S -0700",
        "%d/%B/%Y:%H:%M:%S +0000",
        "%a %b %d %H:%M:%S %Y",
        "%a, %d %b %Y %H:%M:%S GMT",
        "%b %e %H:%M:%S",
        "%b %d %Y %H:%M:%S",
        "%m-%d %H:%M:%S%.3f",
        "%m.%d %H:%M:%S",
        "%s",
        "%s%.3f",
        "%s%3f",
        "%s.%f",
        "%Y-%m-%d %H:%M:%S",
    ];

    /// Variants of `text` sharing its start: cut short, one byte replaced, inserted or
    /// removed. They make invalid dates and times (`2015-10-39`, `98:01:47`) right after
    /// valid ones, and other date texts with the same prefix (`2016/9/27` after `2016/9/2`).
    fn mutants(text: &str) -> Vec<String> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut push = |candidate: Vec<u8>| {
            if let Ok(candidate) = String::from_utf8(candidate) {
                out.push(candidate);
            }
        };
        for at in 0..=bytes.len() {
            push(bytes[..at].to_vec());
            for byte in [b'7', b'0'] {
                let mut inserted = bytes.to_vec();
                inserted.insert(at, byte);
                push(inserted);
            }
            if at < bytes.len() {
                for byte in [b'0', b'3', b'9', b' ', b':'] {
                    let mut replaced = bytes.to_vec();
                    replaced[at] = byte;
                    push(replaced);
                }
                let mut removed = bytes.to_vec();
                removed.remove(at);
                push(removed);
            }
        }
        out
    }

    /// Feeds `texts` to one parser and one kept text, comparing each answer with a fresh
    /// parse and chrono's rendering; returns how many parsed.
    fn check_sequence(texts: &[String], parser: &mut Parser, kept: &mut MillisText) -> usize {
        let mut parsed = 0;
        for text in texts {
            let got = parser.parse_with(text, &|| 2020);
            assert_eq!(
                got,
                parse_with_year(text, 2020),
                "{text:?} after {parser:?}"
            );
            if let Some(ts) = got {
                kept.set(&ts);
                let chrono = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
                assert_eq!(kept.as_str(), chrono, "{text:?}");
                parsed += 1;
            }
        }
        parsed
    }

    #[test]
    fn parser_answers_equal_fresh_parses() {
        let instants = instants();
        let text_of = |at: &NaiveDateTime, shape: &str| at.format(shape).to_string();
        // Each shape in time order; all shapes line by line; fractions of 1 to 9 digits.
        let mut sequences: Vec<Vec<String>> = SHAPES
            .iter()
            .map(|shape| instants.iter().map(|at| text_of(at, shape)).collect())
            .collect();
        sequences.push(
            instants
                .iter()
                .flat_map(|at| SHAPES.iter().map(move |shape| text_of(at, shape)))
                .collect(),
        );
        sequences.push(
            instants
                .iter()
                .flat_map(|at| {
                    let full = text_of(at, "%Y-%m-%d %H:%M:%S%.9f");
                    (1..=9).map(move |digits| full[..full.len() - 9 + digits].to_owned())
                })
                .collect(),
        );
        // Known traps: a longer day after a shorter one, an invalid date or time after a
        // valid one of the same day.
        sequences.push(
            [
                "2016/9/2 20:30:31",
                "2016/9/27 20:30:31",
                "2016/9/2 20:30:31",
                "2015-02-28 10:00:00",
                "2015-02-30 10:00:00",
                "2015-02-28 25:00:00",
                "2015-02-28 23:60:00",
                "2015-02-28 23:59:59",
                "2015-02-28",
                "081109 203615",
                "0811091 203615",
                "081109 253615",
                "081109 2036151",
                "081109 203616",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
        let (mut parser, mut kept) = (Parser::new(), MillisText::new());
        let mut parsed = 0;
        for sequence in &sequences {
            for text in sequence {
                parsed += check_sequence(std::slice::from_ref(text), &mut parser, &mut kept);
                parsed += check_sequence(&mutants(text), &mut parser, &mut kept);
            }
        }
        // Every shape's own texts parse, so the comparisons are not all of failures.
        for sequence in &sequences[..SHAPES.len()] {
            let parsed = check_sequence(sequence, &mut Parser::new(), &mut kept);
            assert_eq!(parsed, sequence.len(), "{sequence:?}");
        }
        assert!(parsed > 100_000, "{parsed}");
    }

    #[test]
    fn year_less_shapes_use_the_current_year_in_parse() {
        let year = Utc::now().year();
        let got = parse("Jun 14 15:16:01").map(|ts| ts.year());
        // Around New Year the clock may tick between the two calls.
        assert!(got == Some(year) || got == Some(year + 1), "{got:?}");
    }

    #[test]
    fn same_bytes_equals_slice_comparison() {
        let text = b"2016-09-28 04:30:30,123456789 +02:00";
        let copy = *text;
        for len in 0..=text.len() {
            let a = &text[..len];
            // Equal bytes at another address.
            assert!(same_bytes(a, &copy[..len]), "{len}");
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 1;
                assert!(!same_bytes(a, &b), "{len} {at}");
            }
            if len > 0 {
                assert!(!same_bytes(a, &text[..len - 1]), "{len}");
            }
        }
    }

    #[test]
    fn epoch_days_equal_chrono() {
        // Day ends both sides of the epoch, a leap day, the ends of chrono's range and past
        // them, repeated so that the kept day is reused too.
        let secs = [
            0,
            86_399,
            86_400,
            -1,
            -86_400,
            -86_401,
            951_782_400,
            951_868_799,
            1_077_804_742,
            253_402_300_799,
            253_402_300_800,
            -62_167_219_200,
            8_210_298_412_799,
            8_210_298_412_800,
            -8_334_601_228_800,
            -8_334_601_228_801,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        let mut parser = Parser::new();
        for _ in 0..2 {
            for secs in secs {
                for nanos in [0, 999_999_999, 1_500_000_000] {
                    let want = DateTime::from_timestamp(secs, nanos);
                    assert_eq!(parser.epoch(secs, nanos), want, "{secs} {nanos}");
                    assert_eq!(parser.epoch(secs, nanos), want, "{secs} {nanos}");
                }
            }
        }
    }

    #[test]
    fn month_and_weekday_names_equal_a_scan_of_the_names() {
        // The first name whose first three letters the word starts with (any case), when the
        // word is a form of it.
        let scan = |names: &[&[u8]], word: &[u8]| {
            names.iter().position(|name| {
                word.len() >= 3 && name[..3].eq_ignore_ascii_case(&word[..3]) && {
                    word.len() == 3
                        || name.eq_ignore_ascii_case(word)
                        || (word.len() == 4
                            && name.len() > 4
                            && name[..4].eq_ignore_ascii_case(word))
                }
            })
        };
        let mut words: Vec<Vec<u8>> = vec![b"".to_vec(), b"Foo".to_vec(), b"j\xe9n".to_vec()];
        for name in MONTHS.iter().chain(&WEEKDAYS) {
            for len in 0..=name.len() {
                for tail in [&b""[..], b"x", b"1", b"s"] {
                    let word = [&name[..len], tail].concat();
                    words.push(word.to_ascii_uppercase());
                    let mut title = word.clone();
                    if let Some(first) = title.first_mut() {
                        *first = first.to_ascii_uppercase();
                    }
                    words.push(title);
                    words.push(word);
                }
            }
        }
        for word in &words {
            let want = scan(&MONTHS, word).and_then(|i| u32::try_from(i + 1).ok());
            assert_eq!(month_number(word), want, "{word:?}");
            assert_eq!(
                is_weekday(word),
                scan(&WEEKDAYS, word).is_some(),
                "{word:?}"
            );
        }
        assert_eq!(month_number(b"Sept"), Some(9));
        assert_eq!(month_number(b"DECEMBER"), Some(12));
        assert!(!is_weekday(b"Thurs") && is_weekday(b"Thu"));
    }

    #[test]
    fn trim_equals_trimming_every_char() {
        fn slow(raw: &str) -> &str {
            trim_ends(raw, |c| c.is_whitespace() || c == '[' || c == ']')
        }
        let ends = [
            "", " ", "\t", "[", "]", "\u{a0}", "\u{3000}", "é", "a", "1", "Z", ".", "[ ",
        ];
        for start in ends {
            for end in ends {
                for middle in ["", "a", "1", "2015-10-18 18:01:47", " ", "]["] {
                    let raw = format!("{start}{middle}{end}");
                    assert_eq!(trim(&raw), slow(&raw), "{raw:?}");
                }
            }
        }
    }

    #[test]
    fn digit_tables_hold_every_number() {
        let entry = |table: &str, width: usize, i: usize| table[i * width..][..width].to_owned();
        assert_eq!(
            (COLON_PAIRS.len(), DOT_PAIRS.len(), MILLIS_Z.len()),
            (300, 300, 4000)
        );
        for i in 0..100 {
            assert_eq!(entry(COLON_PAIRS, 3, i), format!("{i:02}:"));
            assert_eq!(entry(DOT_PAIRS, 3, i), format!("{i:02}."));
        }
        for i in 0..1000 {
            assert_eq!(entry(MILLIS_Z, 4, i), format!("{i:03}Z"));
        }
        let mut out = String::new();
        push_entry::<3>(&mut out, COLON_PAIRS, 100);
        assert_eq!(out, "");
    }

    #[test]
    fn fractions_are_the_first_nine_digits() {
        let digits = "978123456789";
        for len in 0..=digits.len() {
            for tail in ["", "Z", " +02:00", "x"] {
                let text = format!("{}{tail}", &digits[..len]);
                let mut cur = Cursor::new(&text);
                let nine = format!("{:0<9}", &digits[..len.min(9)]);
                let want = (len > 0).then(|| nine.parse::<u32>().ok()).flatten();
                assert_eq!(fraction(&mut cur), want, "{text}");
                assert_eq!(cur.pos, len, "{text}");
            }
        }
        let mut cur = Cursor::new("97a");
        assert_eq!((fraction(&mut cur), cur.pos), (Some(970_000_000), 2));
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

//! The logsight wire format: log batches, single logs and pipeline result records.
//!
//! Fields this crate does not know are kept in `extra` maps (serde `flatten`), so a record read
//! and written back loses nothing. Header fields parsed from raw lines live in the compact
//! [`HeaderFields`] and default tags are shared, because every raw line has both.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// Tag set of a log: key/value pairs such as `{"service": "api"}`.
pub type Tags = BTreeMap<String, String>;

/// The tags of one log: borrowed when they are the defaults, so the common case allocates
/// nothing; [`Cow::to_mut`] gives an owned set to change.
pub type LogTags = Cow<'static, Tags>;

static DEFAULT_TAGS: LazyLock<Tags> = LazyLock::new(default_tags);

/// The tags a log gets when it has none: `{"default": "default"}`, as in logsight.
pub fn default_tags() -> Tags {
    let mut tags = Tags::new();
    tags.insert("default".to_owned(), "default".to_owned());
    tags
}

/// [`default_tags`] as a log's tags, shared instead of built.
pub fn default_log_tags() -> LogTags {
    Cow::Borrowed(&DEFAULT_TAGS)
}

/// Whether `tags` are the defaults (so a compact encoding can leave them out).
pub fn is_default_tags(tags: &Tags) -> bool {
    *tags == *DEFAULT_TAGS
}

/// The header fields of a raw line (`Date`, `Pid`, `Component`…) as (name, value) pairs in
/// format order, written as top-level string keys of the log like `extra`.
///
/// Names and values sit in one string, located by spans, so a line's header costs one buffer
/// instead of two strings and a map node per field. A decoded line fills it with two copies
/// ([`HeaderFields::fill_from`]): its format's names, built once, and the stretch of the line
/// holding the values. Reading JSON cannot tell header fields from unknown ones, so
/// deserializing leaves this empty and the keys land in `extra`.
#[derive(Debug, Clone, Default)]
pub struct HeaderFields {
    text: String,
    /// `[start, end)` in `text` of each field's name, then of its value; inline up to six
    /// fields.
    spans: SmallVec<[[u32; 2]; 12]>,
}

/// The header field names of a format, in one string built once and copied whole into each
/// line's [`HeaderFields`], with where each field's value is found (see
/// [`HeaderFields::fill_from`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldNames {
    text: String,
    /// Each field's name span in `text` and the index of its value.
    fields: Vec<([u32; 2], usize)>,
}

impl FieldNames {
    /// Fields from `(name, index of the value)` pairs, in order.
    pub fn new<'a>(fields: impl IntoIterator<Item = (&'a str, usize)>) -> Self {
        let mut all = FieldNames::default();
        for (name, value_index) in fields {
            let start = all.text.len();
            all.text.push_str(name);
            all.fields
                .push(([offset(start), offset(all.text.len())], value_index));
        }
        all
    }
}

/// A text offset as stored in spans. Lines over 4 GiB are quarantined long before they get
/// here; a cut offset would only make a field read back empty.
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

impl HeaderFields {
    /// Replaces the fields with those of `names` whose value exists: field `i` takes the
    /// range `values[j]` of `source`, `j` being its value index. Fields whose range is absent
    /// or not on char boundaries of `source` are left out. The values are copied at once, as
    /// the stretch of `source` from the first value's start to the last one's end, after the
    /// names' text. The same fields as a [`HeaderFields::push`] of each.
    pub fn fill_from(
        &mut self,
        names: &FieldNames,
        source: &str,
        values: &[Option<(usize, usize)>],
    ) {
        let value = |at: usize| {
            values
                .get(at)
                .copied()
                .flatten()
                .filter(|&(start, end)| source.get(start..end).is_some())
        };
        let (mut low, mut high) = (usize::MAX, 0);
        for &(_, at) in &names.fields {
            if let Some((start, end)) = value(at) {
                low = low.min(start);
                high = high.max(end);
            }
        }
        self.text.clear();
        self.text.push_str(&names.text);
        let base = self.text.len();
        // Bounds of valid ranges, so char boundaries; empty when there are none.
        self.text
            .push_str(source.get(low..high).unwrap_or_default());
        self.spans.clear();
        for &(name, at) in &names.fields {
            if let Some((start, end)) = value(at) {
                self.spans.push(name);
                self.spans
                    .push([offset(base + start - low), offset(base + end - low)]);
            }
        }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &str) {
        for part in [name, value] {
            let start = self.text.len();
            self.text.push_str(part);
            self.spans.push([offset(start), offset(self.text.len())]);
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len() / 2
    }

    /// Removes all fields, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let part = |[start, end]: [u32; 2]| {
            self.text
                .get(start as usize..end as usize)
                .unwrap_or_default()
        };
        self.spans
            .chunks_exact(2)
            .map(move |field| (part(field[0]), part(field[1])))
    }

    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The packed form: the text and the spans, flattened (for compact wire formats).
    pub fn as_parts(&self) -> (&str, &[u32]) {
        (&self.text, self.spans.as_flattened())
    }

    /// Rebuilds fields from [`HeaderFields::as_parts`]; `None` when the spans do not fit the
    /// text (a corrupt or foreign message).
    pub fn from_parts(text: String, spans: &[u32]) -> Option<Self> {
        if !spans.len().is_multiple_of(4) {
            return None;
        }
        // `get` also rejects a span that ends before it starts.
        let fits = spans
            .chunks_exact(2)
            .all(|span| text.get(span[0] as usize..span[1] as usize).is_some());
        fits.then(|| HeaderFields {
            spans: spans.chunks_exact(2).map(|s| [s[0], s[1]]).collect(),
            text,
        })
    }
}

/// Equal fields, however their text is laid out.
impl PartialEq for HeaderFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for HeaderFields {}

impl Serialize for HeaderFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for HeaderFields {
    /// Consumes nothing: flattened, the log's unknown keys all go to `extra`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SkipEntries)?;
        Ok(HeaderFields::default())
    }
}

/// Reads a map and keeps nothing; flattened, it leaves every entry to the next field.
struct SkipEntries;

impl<'de> Visitor<'de> for SkipEntries {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A line's variable values in order of appearance, back to back in one string: one
/// allocation per line instead of one per value plus the vector. Serialized as a JSON array of
/// strings, like the `Vec<String>` it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    text: String,
    /// End offset in `text` of each value; inline up to 12.
    ends: SmallVec<[u32; 12]>,
}

impl Params {
    /// Room for `values` values of `bytes` bytes in all.
    pub fn with_capacity(values: usize, bytes: usize) -> Self {
        Params {
            text: String::with_capacity(bytes),
            ends: SmallVec::with_capacity(values),
        }
    }

    /// Appends a value. Offsets are `u32`: values beyond 4 GiB in all are cut at that size
    /// rather than wrapped (lines that long are quarantined long before they get here).
    #[inline]
    pub fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(offset(self.text.len()));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Removes all values, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Room for `values` more values of `bytes` more bytes in all.
    pub fn reserve(&mut self, values: usize, bytes: usize) {
        self.text.reserve(bytes);
        self.ends.reserve(values);
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Value `i`.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    /// The values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// The values as owned strings.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }

    /// The packed form: the text and the end offsets (for compact wire formats).
    pub fn as_parts(&self) -> (&str, &[u32]) {
        (&self.text, &self.ends)
    }

    /// Rebuilds values from [`Params::as_parts`]; `None` when the offsets do not fit the text
    /// (a corrupt or foreign message).
    pub fn from_parts(text: String, ends: &[u32]) -> Option<Self> {
        fits_parts(&text, ends).then(|| Params {
            text,
            ends: SmallVec::from_slice(ends),
        })
    }
}

/// Whether `ends` are ascending char boundaries of `text` ending at its end.
fn fits_parts(text: &str, ends: &[u32]) -> bool {
    ends.windows(2).all(|w| w[0] <= w[1])
        && ends.iter().all(|&e| text.is_char_boundary(e as usize))
        && ends
            .last()
            .map_or(text.is_empty(), |&e| e as usize == text.len())
}

impl<'a> FromIterator<&'a str> for Params {
    fn from_iter<I: IntoIterator<Item = &'a str>>(values: I) -> Self {
        let mut params = Params::default();
        for value in values {
            params.push(value);
        }
        params
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Params {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.len() == N && self.iter().eq(other.iter().copied())
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ParamsVisitor)
    }
}

/// Reads an array of strings into [`Params`].
struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        let mut params = Params::with_capacity(seq.size_hint().unwrap_or(0).min(64), 0);
        while let Some(value) = seq.next_element::<Cow<'de, str>>()? {
            params.push(&value);
        }
        Ok(params)
    }
}

/// A batch of logs as sent by clients: `{"id","index","logs":[...],"metadata":{}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Tenant/application index prefix; results go to `<index>_pipeline`.
    pub index: String,
    pub logs: Vec<LogRecord>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One log line: `{"message","timestamp","level","id","metadata":{},"tags":{}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default = "default_log_tags")]
    pub tags: LogTags,
    /// Fields parsed from the raw line's header (see [`HeaderFields`]).
    #[serde(flatten)]
    pub header: HeaderFields,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LogRecord {
    /// A record holding only a message, with default tags.
    pub fn from_message(message: impl Into<String>) -> Self {
        LogRecord {
            message: message.into(),
            timestamp: None,
            level: None,
            id: None,
            metadata: Map::new(),
            tags: default_log_tags(),
            header: HeaderFields::default(),
            extra: Map::new(),
        }
    }

    /// Empties the log for the next line: the same fields as `from_message("")`, with the
    /// message and header buffers kept for reuse.
    pub fn reset(&mut self) {
        self.message.clear();
        self.timestamp = None;
        self.level = None;
        self.id = None;
        // Clearing an empty map still walks a dropped tree iterator: test first.
        if !self.metadata.is_empty() {
            self.metadata.clear();
        }
        if let Cow::Owned(_) = self.tags {
            self.tags = default_log_tags();
        }
        self.header.clear();
        if !self.extra.is_empty() {
            self.extra.clear();
        }
    }
}

/// The top-level keys of a serialized [`ResultRecord`] (the log's own fields and the ones the
/// analytics add). An `extra` field of the same name would serialize twice, so writers drop it.
pub const RESULT_FIELDS: [&str; 14] = [
    "message",
    "timestamp",
    "level",
    "id",
    "metadata",
    "tags",
    "template",
    "template_id",
    "params",
    "prediction",
    "anomaly_score",
    "risk_score",
    "added_state",
    "ingest_timestamp",
];

/// A pipeline result: the log plus everything the analytics added. One per input line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    #[serde(flatten)]
    pub log: LogRecord,
    /// Masked message with variables as `<*>` (shared with the miner's template).
    pub template: Arc<str>,
    /// Stable id of the template (see `miner::TemplateId`), as a hex string (shared with the
    /// miner's template).
    pub template_id: Arc<str>,
    /// Variable values of this line, in order of appearance.
    pub params: Params,
    /// 1 when the line is flagged as a semantic anomaly.
    pub prediction: u8,
    pub anomaly_score: f64,
    pub risk_score: u32,
    /// 1 when this line's template was seen for the first time.
    pub added_state: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_timestamp: Option<String>,
}

impl ResultRecord {
    /// `log` before analysis: no template yet (empty texts, shared rather than allocated), no
    /// params, scores 0.
    pub fn unanalyzed(log: LogRecord) -> Self {
        static EMPTY: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(""));
        ResultRecord {
            log,
            template: Arc::clone(&EMPTY),
            template_id: Arc::clone(&EMPTY),
            params: Params::default(),
            prediction: 0,
            anomaly_score: 0.0,
            risk_score: 0,
            added_state: 0,
            ingest_timestamp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_keep_order_and_serialize_as_top_level_keys() {
        let mut log = LogRecord::from_message("m");
        log.header.push("Date", "081109");
        log.header.push("Pid", "");
        log.header.push("Component", "dfs.DataNode$PacketResponder");
        assert_eq!(log.header.len(), 3);
        let fields: Vec<_> = log.header.iter().collect();
        assert_eq!(
            fields,
            [
                ("Date", "081109"),
                ("Pid", ""),
                ("Component", "dfs.DataNode$PacketResponder")
            ]
        );
        assert_eq!(log.header.get("Pid"), Some(""));
        assert_eq!(log.header.get("Level"), None);
        let json = serde_json::to_value(&log).unwrap();
        assert_eq!(json["Date"], "081109");
        assert_eq!(json["Component"], "dfs.DataNode$PacketResponder");
        assert_eq!(json["tags"]["default"], "default");
        // Read back, the same keys are unknown fields: nothing is lost or duplicated.
        let back: LogRecord = serde_json::from_value(json.clone()).unwrap();
        assert!(back.header.is_empty());
        assert_eq!(back.extra["Pid"], "");
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn header_filled_from_a_line_equals_pushes() {
        // (name, index of its value): out of order, shared, and past the values given.
        let fields = [
            ("Date", 0),
            ("Time", 1),
            ("", 2),
            ("Level", 3),
            ("Component", 4),
            ("ü", 5),
            ("Pid", 6),
            ("Copy", 1),
            ("Id", 9),
            ("Node", 7),
        ];
        let names = FieldNames::new(fields);
        let line = "081109 203615 ünï INFO dfs.DataNode 143 x";
        // Ranges of the line: one empty, one not on char boundaries, one past the end.
        let ranges = [
            Some((0, 6)),
            Some((7, 13)),
            Some((14, 14)),
            Some((20, 24)),
            Some((25, 37)),
            Some((15, 17)),
            Some((38, 41)),
            Some((42, 43)),
        ];
        let expected = |values: &[Option<(usize, usize)>]| {
            let mut pushed = HeaderFields::default();
            for (name, at) in fields {
                let range = values.get(at).copied().flatten();
                if let Some(value) = range.and_then(|(s, e)| line.get(s..e)) {
                    pushed.push(name, value);
                }
            }
            pushed
        };
        // All but `ü` (not on char boundaries) and `Id` (no value).
        assert_eq!(expected(&ranges).len(), 8);
        let mut filled = HeaderFields::default();
        for n in (0..=ranges.len()).chain((0..=ranges.len()).rev()) {
            let mut values = ranges[..n].to_vec();
            for absent in 0..n.min(3) {
                filled.fill_from(&names, line, &values);
                assert_eq!(filled, expected(&values), "{n} values, {absent} absent");
                let pairs: Vec<_> = filled.iter().collect();
                assert_eq!(pairs, expected(&values).iter().collect::<Vec<_>>());
                // Values are copied as one stretch of the line, after the names.
                assert!(filled.text.len() <= names.text.len() + line.len());
                if let Some(value) = values.get_mut(absent * 2) {
                    *value = None;
                }
            }
        }
    }

    #[test]
    fn header_parts_are_checked_when_rebuilt() {
        let mut h = HeaderFields::default();
        h.push("Level", "INFO");
        let (text, spans) = h.as_parts();
        assert_eq!(spans, [0, 5, 5, 9]);
        assert_eq!(
            HeaderFields::from_parts(text.into(), spans),
            Some(h.clone())
        );
        // Name and value may share text.
        let shared = HeaderFields::from_parts("ab".into(), &[0, 1, 0, 2]).unwrap();
        assert_eq!(shared.iter().collect::<Vec<_>>(), [("a", "ab")]);
        assert_eq!(HeaderFields::from_parts("ab".into(), &[0, 1]), None);
        assert_eq!(HeaderFields::from_parts("ab".into(), &[0, 1, 2, 1]), None);
        assert_eq!(HeaderFields::from_parts("ab".into(), &[0, 1, 1, 3]), None);
        assert_eq!(HeaderFields::from_parts("ü".into(), &[0, 1, 1, 2]), None);
        assert_eq!(
            HeaderFields::from_parts(String::new(), &[]),
            Some(HeaderFields::default())
        );
    }

    #[test]
    fn default_tags_are_shared_until_changed() {
        let mut log = LogRecord::from_message("m");
        assert!(matches!(log.tags, Cow::Borrowed(_)));
        assert!(is_default_tags(&log.tags));
        log.tags.to_mut().insert("service".into(), "db".into());
        assert!(!is_default_tags(&log.tags));
        assert_eq!(default_tags().len(), 1);
    }

    #[test]
    fn batches_keep_unknown_fields_and_default_tags() {
        let text = r#"{"id":"b1","index":"shop","source":"edge-7","metadata":{"k":1},
            "logs":[{"message":"hello","timestamp":"2021-01-01T00:00:00Z","level":"INFO",
            "id":"l1","metadata":{},"host":"web-1"},
            {"message":"bye","tags":{"service":"cart"}}]}"#;
        let batch: LogBatch = serde_json::from_str(text).unwrap();
        assert_eq!(batch.extra["source"], "edge-7");
        assert_eq!(*batch.logs[0].tags, default_tags());
        assert_eq!(batch.logs[0].extra["host"], "web-1");
        assert_eq!(batch.logs[1].tags["service"], "cart");
        assert_eq!(batch.logs[1].timestamp, None);
        let back: LogBatch = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn batches_missing_required_fields_are_errors() {
        assert!(serde_json::from_str::<LogBatch>(r#"{"index":"a"}"#).is_err());
        assert!(serde_json::from_str::<LogBatch>(r#"{"logs":[]}"#).is_err());
        assert!(serde_json::from_str::<LogBatch>(r#"{"index":"a","logs":[{}]}"#).is_err());
    }

    #[test]
    fn params_keep_values_in_order_and_read_back_from_json() {
        let params: Params = ["10.0.0.1", "", "ü €", "42"].into_iter().collect();
        assert_eq!(params.len(), 4);
        assert_eq!(params.get(2), Some("ü €"));
        assert_eq!(params.get(4), None);
        assert_eq!(params, ["10.0.0.1", "", "ü €", "42"]);
        assert_ne!(params, ["10.0.0.1", "", "ü €"]);
        let json = serde_json::to_string(&params).unwrap();
        assert_eq!(json, r#"["10.0.0.1","","ü €","42"]"#);
        assert_eq!(serde_json::from_str::<Params>(&json).unwrap(), params);
        assert_eq!(params.to_vec(), ["10.0.0.1", "", "ü €", "42"]);
        assert!(serde_json::from_str::<Params>("[1]").is_err());
        assert!(Params::default().is_empty());
    }

    #[test]
    fn results_flatten_the_log_and_round_trip() {
        let result = ResultRecord {
            log: LogRecord::from_message("disk full"),
            template: "disk full".into(),
            template_id: "00000000000000ff".into(),
            params: ["sda1", "", "x \"y\""].into_iter().collect(),
            prediction: 1,
            anomaly_score: 0.9,
            risk_score: 80,
            added_state: 1,
            ingest_timestamp: None,
        };
        let value = serde_json::to_value(&result).unwrap();
        assert_eq!(value["message"], "disk full");
        assert_eq!(value["tags"]["default"], "default");
        assert_eq!(value["risk_score"], 80);
        assert!(value.get("ingest_timestamp").is_none());
        let back: ResultRecord = serde_json::from_value(value).unwrap();
        assert_eq!(back, result);
    }
}

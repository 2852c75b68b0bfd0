//! Online template mining (Drain class): each masked line joins the most similar template of its
//! shard or starts a new one; differing positions generalise to `<*>`.
//!
//! Sharding: every line has a [`shard_key`] computed from the line alone (index, token count,
//! first token). Templates live inside one shard and lines only ever meet templates of their
//! own shard, so any partition of the shards over independent miners yields exactly the
//! templates and ids of a single miner.
//!
//! Template ids are a stable 64-bit hash of the index, shard and the masked text of the line
//! that created the template: fixed for the template's life even as its text generalises,
//! unique across shards and processes without coordination, and deterministic.
//!
//! Memory: at most `max_templates_per_shard` templates per shard. When a new template would
//! exceed the cap, the least recently matched template of that shard is evicted (LRU on a
//! per-shard logical clock, so eviction is deterministic). A line of an evicted template later
//! recreates it, with the same id if its first line comes back.

use crate::mask::{is_wildcard, MaskedMessage, WILDCARD};
use crate::model::Params;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::hash::Hasher;
use std::sync::Arc;

/// Stable id of a template.
pub type TemplateId = u64;

/// Renders a template id the way it is stored (`template_id` field): 16 hex digits.
/// The text form of a template id: 16 lower-case hex digits.
pub fn format_template_id(id: TemplateId) -> String {
    hex16(id)
}

/// `value` as 16 lower-case hex digits, the form of template and document ids. Written by
/// hand: it runs twice per line, and `format!` costs several times more.
pub fn hex16(value: u64) -> String {
    // Hex digits are ASCII, so this never takes the fallback.
    String::from_utf8(hex16_digits(value).to_vec()).unwrap_or_default()
}

/// The digits of [`hex16`] on the stack, for callers that only borrow the text. Eight digits
/// at a time in a word (SWAR): a table lookup per digit costs several times more.
pub fn hex16_digits(value: u64) -> [u8; 16] {
    let high = hex8((value >> 32) as u32).to_be_bytes();
    let low = hex8(value as u32).to_be_bytes();
    let mut out = [0; 16];
    out[..8].copy_from_slice(&high);
    out[8..].copy_from_slice(&low);
    out
}

/// The eight hex digits of `x` as ASCII bytes of a word, the least significant digit lowest.
fn hex8(x: u32) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // One nibble per byte.
    let mut x = u64::from(x);
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in the bytes holding 10..=15, which skip from after `9` to `a`.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    x + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10)
}

/// Miner settings. One global default serves all log types; see `configs/logsight.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinerConfig {
    /// Minimum similarity (0..1) for a line to join an existing template.
    pub similarity_threshold: f64,
    /// Weight of a template wildcard facing a constant token (a constant facing a masked
    /// variable in the line counts 0). 1 would make wildcards absorb anything.
    pub wildcard_weight: f64,
    /// Cap on templates per shard; the least recently matched one is evicted beyond it.
    pub max_templates_per_shard: usize,
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            similarity_threshold: 0.5,
            wildcard_weight: 0.5,
            max_templates_per_shard: 1000,
        }
    }
}

/// Which shard a line belongs to: a hash of its index, token count and first constant token
/// among the first three (one without a variable or digit; `*` when there is none). Skipping
/// leading values (`<*> Served block ...`) keeps events apart and shards many, which spreads
/// work evenly over workers.
pub fn shard_key(index: &str, msg: &MaskedMessage) -> u64 {
    let mut h = Fnv64::new();
    h.write(index.as_bytes());
    h.write(&[0xff]);
    h.write_u64_le(msg.len() as u64);
    h.write(first_token_key(msg).as_bytes());
    h.finish()
}

fn first_token_key(msg: &MaskedMessage) -> &str {
    // Over the spans directly: the token iterator's per-item checks cost more than the test.
    msg.masked_spans()
        .take(KEY_TOKENS)
        .filter_map(|(s, e)| msg.masked.get(s as usize..e as usize))
        .find(|token| is_constant(token))
        .unwrap_or("*")
}

/// How many leading tokens the shard key looks at for a constant one.
const KEY_TOKENS: usize = 3;

/// A token that names the event rather than carrying a value: no wildcard and no digit.
/// One byte pass: `str::contains` sets up a substring searcher per call, which costs more
/// than the scan itself on tokens this short.
fn is_constant(token: &str) -> bool {
    // Whether the previous byte was `<`: one flag instead of a look-ahead per byte.
    let mut after_open = false;
    for &b in token.as_bytes() {
        if b.is_ascii_digit() || (after_open && matches!(b, b'*' | b':')) {
            return false;
        }
        after_open = b == b'<';
    }
    true
}

/// One template of a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub id: TemplateId,
    /// `id` as stored (see [`format_template_id`]), rendered once and shared with results.
    #[serde(skip)]
    id_text: Arc<str>,
    pub tokens: Vec<String>,
    /// `tokens` joined by spaces, kept in sync so a match costs no re-rendering. Shared with
    /// every result of the template (a line's result holds it without copying it).
    pub text: Arc<str>,
    pub count: u64,
    /// Shard clock value of the last line that matched (for LRU eviction).
    pub last_seen: u64,
    /// How each token matches, derived from `tokens` (rebuilt on restore): matching a line
    /// against many templates must not re-scan tokens for wildcards.
    #[serde(skip)]
    shapes: Vec<Shape>,
    /// Whether every shape is [`Shape::Exact`] (derived, like `shapes`): the line's params are
    /// then all its masked values, taken without walking the tokens.
    #[serde(skip)]
    exact_only: bool,
}

fn all_exact(shapes: &[Shape]) -> bool {
    shapes.iter().all(|s| matches!(s, Shape::Exact { .. }))
}

/// How a template token matches a line token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Only an equal token; `plain` when it is a plain word (see [`is_plain_word`]).
    Exact { plain: bool },
    /// Any token.
    Wildcard,
    /// Any token framed by the template's text before its first and after its last wildcard.
    Pattern { prefix: usize, suffix: usize },
}

impl Shape {
    fn of(token: &str) -> Shape {
        if is_wildcard(token) {
            return Shape::Wildcard;
        }
        match (token.find(WILDCARD), token.rfind(WILDCARD)) {
            (Some(first), Some(last)) => Shape::Pattern {
                prefix: first,
                suffix: token.len() - last - WILDCARD.len(),
            },
            _ => Shape::Exact {
                plain: is_plain_word(token),
            },
        }
    }

    /// Whether a pattern token `t` of this shape frames `token`.
    fn frames(self, t: &str, token: &str) -> bool {
        match self {
            Shape::Pattern { prefix, suffix } => {
                token.len() > prefix + suffix
                    && token.as_bytes().starts_with(&t.as_bytes()[..prefix])
                    && token
                        .as_bytes()
                        .ends_with(&t.as_bytes()[t.len() - suffix..])
            }
            _ => false,
        }
    }
}

impl Template {
    fn new(id: TemplateId, tokens: Vec<String>, clock: u64) -> Self {
        let text = tokens.join(" ").into();
        let shapes: Vec<Shape> = tokens.iter().map(|t| Shape::of(t)).collect();
        let exact_only = all_exact(&shapes);
        Template {
            id,
            id_text: format_template_id(id).into(),
            tokens,
            text,
            count: 0,
            last_seen: clock,
            shapes,
            exact_only,
        }
    }

    /// Rebuilds what snapshots leave out: the shapes and the id's text.
    fn rebuild_derived(&mut self) {
        self.shapes = self.tokens.iter().map(|t| Shape::of(t)).collect();
        self.exact_only = all_exact(&self.shapes);
        self.id_text = format_template_id(self.id).into();
    }

    /// Turns every position that disagrees with the line into a wildcard, keeping the
    /// punctuation both sides share around it (`SAM,` and `DEFAULT,` give `<*>,`).
    /// Returns whether the template changed.
    fn generalise(&mut self, msg: &MaskedMessage) -> bool {
        let mut changed = false;
        for (i, (t, shape)) in self.tokens.iter_mut().zip(&mut self.shapes).enumerate() {
            let line = msg.masked_token(i);
            let agrees = match *shape {
                Shape::Wildcard => true,
                Shape::Exact { .. } => t == line,
                pattern => pattern.frames(t, line),
            };
            if !agrees {
                *t = generalised_token(t, line);
                *shape = Shape::of(t);
                changed = true;
            }
        }
        if changed {
            self.text = self.tokens.join(" ").into();
            self.exact_only = all_exact(&self.shapes);
        }
        changed
    }
}

/// The templates of one shard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub templates: Vec<Template>,
    pub clock: u64,
    pub evictions: u64,
    /// Derived from `templates`, so never saved: a restored shard starts with it empty.
    #[serde(skip)]
    recent: RecentMatches,
}

impl Shard {
    /// A copy of what a snapshot saves: the recent-matches cache (thousands of entries, never
    /// saved) is left out rather than copied at every epoch.
    fn saved_part(&self) -> Shard {
        Shard {
            templates: self.templates.clone(),
            clock: self.clock,
            evictions: self.evictions,
            recent: RecentMatches::default(),
        }
    }
}

/// Which template recently seen masked lines chose, so a line seen before skips the scan over
/// the shard's templates (most lines repeat a masked form already seen). The scan's answer
/// depends only on the templates' tokens and the line, so an entry stays exact as long as no
/// template is added, replaced or generalised; any such change clears the whole cache.
#[derive(Debug, Clone, Default)]
struct RecentMatches {
    /// Hash of the masked tokens and their boundaries → (the tokens back to back, slot).
    /// A hit needs both the hash and the text to agree.
    entries: FxHashMap<u64, (Box<str>, usize)>,
}

/// Entries kept per shard before the cache starts over (a bound on memory, not a tuning knob:
/// a shard whose lines are this varied gains little from it).
const RECENT_MATCHES_CAP: usize = 4096;

impl PartialEq for RecentMatches {
    /// A cache never makes two shards different.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RecentMatches {
    fn key(msg: &MaskedMessage) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        h.write(msg.masked.as_bytes());
        for (_, end) in msg.masked_spans() {
            h.write_u32(end);
        }
        h.finish()
    }

    fn get(&self, key: u64, msg: &MaskedMessage) -> Option<usize> {
        let (masked, slot) = self.entries.get(&key)?;
        (**masked == *msg.masked).then_some(*slot)
    }

    fn insert(&mut self, key: u64, msg: &MaskedMessage, slot: usize) {
        if self.entries.len() >= RECENT_MATCHES_CAP {
            self.entries.clear();
        }
        let masked = msg.masked.as_str().into();
        self.entries.insert(key, (masked, slot));
    }

    fn clear(&mut self) {
        self.entries.clear();
    }
}

/// What mining one line produced.
#[derive(Debug, Clone, PartialEq)]
pub struct MineOutcome {
    pub template_id: TemplateId,
    /// `template_id` as stored, shared with the miner.
    pub template_id_text: Arc<str>,
    /// The template text after this line (variables as `<*>`), shared with the miner.
    pub template: Arc<str>,
    /// The line's variable values, in order.
    pub params: Params,
    /// True when this line created the template.
    pub added: bool,
    /// Lines matched by the template so far, this one included.
    pub count: u64,
}

/// Serializable miner state, restored with [`TemplateMiner::restore`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerSnapshot {
    pub version: u32,
    pub config: MinerConfig,
    pub shards: Vec<(u64, Shard)>,
}

const SNAPSHOT_VERSION: u32 = 1;

/// An online template miner holding any number of shards.
#[derive(Debug, Clone, Default)]
pub struct TemplateMiner {
    config: MinerConfig,
    shards: FxHashMap<u64, Shard>,
}

impl TemplateMiner {
    pub fn new(config: MinerConfig) -> Self {
        TemplateMiner {
            config,
            shards: FxHashMap::default(),
        }
    }

    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    /// Mines one line of `index`.
    pub fn add(&mut self, index: &str, msg: &MaskedMessage) -> MineOutcome {
        let key = shard_key(index, msg);
        self.add_to_shard(key, index, msg)
    }

    /// Mines one line whose shard key the caller already computed with [`shard_key`].
    pub fn add_to_shard(&mut self, key: u64, index: &str, msg: &MaskedMessage) -> MineOutcome {
        self.add_to_shard_reusing(key, index, msg, Params::default())
    }

    /// [`TemplateMiner::add_to_shard`], the line's params written into `params` (emptied
    /// first): a caller passing back the params of its previous line reuses their buffers.
    pub fn add_to_shard_reusing(
        &mut self,
        key: u64,
        index: &str,
        msg: &MaskedMessage,
        params: Params,
    ) -> MineOutcome {
        let config = &self.config;
        let shard = self.shards.entry(key).or_default();
        shard.clock += 1;
        let clock = shard.clock;
        let recent_key = RecentMatches::key(msg);
        let cached = shard.recent.get(recent_key, msg);
        let best = cached.or_else(|| {
            let best = best_match(&shard.templates, msg, config);
            if let Some(i) = best {
                shard.recent.insert(recent_key, msg, i);
            }
            best
        });
        let (slot, added) = match best {
            Some(i) => {
                // An entry is only left in the cache when generalising its line changed
                // nothing, and any change since would have cleared it: on a hit, generalising
                // again would change nothing either.
                if cached.is_none() && shard.templates[i].generalise(msg) {
                    shard.recent.clear();
                }
                (i, false)
            }
            None => {
                shard.recent.clear();
                let tokens = msg.masked_tokens().map(str::to_owned).collect();
                let template = Template::new(template_id(index, key, msg), tokens, clock);
                (
                    insert_bounded(shard, template, config.max_templates_per_shard),
                    true,
                )
            }
        };
        let template = &mut shard.templates[slot];
        template.count += 1;
        template.last_seen = clock;
        MineOutcome {
            template_id: template.id,
            template_id_text: Arc::clone(&template.id_text),
            template: Arc::clone(&template.text),
            params: extract_params(template, msg, params),
            added,
            count: template.count,
        }
    }

    /// All templates with their shard keys.
    pub fn templates(&self) -> impl Iterator<Item = (u64, &Template)> {
        self.shards
            .iter()
            .flat_map(|(k, s)| s.templates.iter().map(move |t| (*k, t)))
    }

    pub fn template_count(&self) -> usize {
        self.shards.values().map(|s| s.templates.len()).sum()
    }

    pub fn evictions(&self) -> u64 {
        self.shards.values().map(|s| s.evictions).sum()
    }

    /// The miner's state, with shards in key order so equal states serialize equally.
    pub fn snapshot(&self) -> MinerSnapshot {
        let mut shards: Vec<(u64, Shard)> = self
            .shards
            .iter()
            .map(|(k, s)| (*k, s.saved_part()))
            .collect();
        shards.sort_by_key(|(k, _)| *k);
        MinerSnapshot {
            version: SNAPSHOT_VERSION,
            config: self.config.clone(),
            shards,
        }
    }

    /// Rebuilds a miner from a snapshot; `None` when the snapshot's version is unknown.
    pub fn restore(snapshot: MinerSnapshot) -> Option<Self> {
        if snapshot.version != SNAPSHOT_VERSION {
            return None;
        }
        let mut shards: FxHashMap<u64, Shard> = snapshot.shards.into_iter().collect();
        for template in shards.values_mut().flat_map(|s| s.templates.iter_mut()) {
            template.rebuild_derived();
        }
        Some(TemplateMiner {
            config: snapshot.config,
            shards,
        })
    }
}

/// Index of the most similar template reaching the threshold; ties go to the older template.
fn best_match(templates: &[Template], msg: &MaskedMessage, config: &MinerConfig) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    // Plain-word flags of the line's tokens, computed once and only if a template needs them.
    let mut plain: Option<Vec<bool>> = None;
    for (i, t) in templates.iter().enumerate() {
        if t.tokens.len() != msg.len() {
            continue;
        }
        let floor = best.map_or(config.similarity_threshold, |(_, b)| b);
        let Some(sim) = similarity(t, msg, config.wildcard_weight, floor, &mut plain) else {
            continue;
        };
        if sim >= config.similarity_threshold && best.is_none_or(|(_, b)| sim > b) {
            best = Some((i, sim));
        }
    }
    best.map(|(i, _)| i)
}

/// Share of positions where the template agrees with the line: equal tokens count 1, a
/// template wildcard (or pattern) facing a line token counts `wildcard_weight`. `None` when
/// the two disagree on a pair of plain words — messages differing only in a word like
/// `initialization`/`finalization` are different events, whereas values (ids, numbers,
/// paths) carry digits or punctuation and were mostly masked already — or when the score
/// can no longer reach `floor`.
fn similarity(
    template: &Template,
    msg: &MaskedMessage,
    wildcard_weight: f64,
    floor: f64,
    plain: &mut Option<Vec<bool>>,
) -> Option<f64> {
    let n = template.tokens.len();
    if n == 0 {
        return Some(1.0);
    }
    let mut score = 0.0;
    for (i, (t, shape)) in template.tokens.iter().zip(&template.shapes).enumerate() {
        let token = msg.masked_token(i);
        match *shape {
            Shape::Wildcard => score += wildcard_weight,
            Shape::Exact { plain: t_plain } => {
                if t == token {
                    score += 1.0;
                } else if t_plain && line_plain(plain, msg)[i] {
                    return None;
                }
            }
            pattern => {
                if pattern.frames(t, token) {
                    score += wildcard_weight;
                }
            }
        }
        // Even if every remaining position matched exactly, the floor is out of reach.
        if (score + (n - i - 1) as f64) / (n as f64) < floor {
            return None;
        }
    }
    Some(score / n as f64)
}

fn line_plain<'a>(plain: &'a mut Option<Vec<bool>>, msg: &MaskedMessage) -> &'a [bool] {
    plain.get_or_insert_with(|| msg.masked_tokens().map(is_plain_word).collect())
}

/// A wildcard framed by what `a` and `b` share before and after it, cut at a delimiter so
/// no word is split: `Interconnect-0T0` and `Interconnect-1T2` give `Interconnect-<*>`,
/// `storage234` and `storage442` give `<*>`.
fn generalised_token(a: &str, b: &str) -> String {
    let is_delimiter = |c: char| !c.is_alphanumeric() && !matches!(c, '<' | '>' | '*');
    let common_prefix: String = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    let prefix = match common_prefix.rfind(is_delimiter) {
        Some(i) => &common_prefix[..=i],
        None => "",
    };
    let mut common_suffix: Vec<char> = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect();
    common_suffix.reverse();
    let common_suffix: String = common_suffix.into_iter().collect();
    let suffix = match common_suffix.find(is_delimiter) {
        Some(i) => &common_suffix[i..],
        None => "",
    };
    if prefix.len() + suffix.len() >= a.len().min(b.len()) {
        return WILDCARD.to_owned();
    }
    format!("{prefix}{WILDCARD}{suffix}")
}

/// Letters only, ignoring trailing sentence punctuation.
fn is_plain_word(token: &str) -> bool {
    let word = token.trim_end_matches(['.', ',', ':', ';', '!', '?']);
    !word.is_empty() && word.chars().all(char::is_alphabetic)
}

/// Inserts `template`, evicting the least recently matched template when the shard is full.
fn insert_bounded(shard: &mut Shard, template: Template, cap: usize) -> usize {
    if shard.templates.len() >= cap.max(1) {
        let lru = shard
            .templates
            .iter()
            .enumerate()
            .min_by_key(|(_, t)| t.last_seen)
            .map(|(i, _)| i);
        if let Some(i) = lru {
            shard.templates[i] = template;
            shard.evictions += 1;
            return i;
        }
    }
    shard.templates.push(template);
    shard.templates.len() - 1
}

/// The line's values at template wildcards (whole tokens) and inside partially masked
/// constant tokens, in order.
///
/// Called only on the template the line just matched, after [`Template::generalise`] (or on a
/// recent-matches hit, where generalising would change nothing): every exact token then equals
/// the line's masked token, so exact positions take the token's masked values without
/// comparing text. (Generalising never leaves an exact token that disagrees: a generalised
/// token always holds a wildcard.)
fn extract_params(template: &Template, msg: &MaskedMessage, mut params: Params) -> Params {
    let masked_bytes: u32 = (0..msg.value_count())
        .filter_map(|k| msg.value(k))
        .map(|(_, s, e)| e.saturating_sub(s))
        .sum();
    // Sized for the masked values plus some room for tokens the template generalised; no
    // allocation for lines without masked values, which usually have no params at all.
    let room = if masked_bytes == 0 {
        0
    } else {
        masked_bytes as usize + 16
    };
    params.clear();
    params.reserve(msg.value_count() + 1, room);
    if template.exact_only {
        // Every token takes its own values and the line has as many tokens as the template:
        // the params are all the masked values, in order.
        for k in 0..msg.value_count() {
            if let Some((_, s, e)) = msg.value(k) {
                params.push(&msg.text[s as usize..e as usize]);
            }
        }
        return params;
    }
    // Masked values are in token order: one cursor walks them alongside the tokens.
    let mut next_index = 0;
    let mut next_value = msg.value(0);
    for (i, (t, shape)) in template.tokens.iter().zip(&template.shapes).enumerate() {
        let takes_values = match *shape {
            Shape::Wildcard => {
                params.push(msg.original_token(i));
                false
            }
            Shape::Exact { .. } => {
                debug_assert_eq!(t, msg.masked_token(i));
                true
            }
            Shape::Pattern { prefix, suffix } => {
                if t == msg.masked_token(i) {
                    true
                } else {
                    let original = msg.original_token(i);
                    if shape.frames(t, original) {
                        params.push(&original[prefix..original.len() - suffix]);
                    } else {
                        params.push(original);
                    }
                    false
                }
            }
        };
        if takes_values {
            // Values of earlier tokens (taken whole by a wildcard or a pattern) are skipped.
            let token = i as u32;
            while let Some((value_token, s, e)) = next_value {
                if value_token > token {
                    break;
                }
                if value_token == token {
                    params.push(&msg.text[s as usize..e as usize]);
                }
                next_index += 1;
                next_value = msg.value(next_index);
            }
        }
    }
    params
}

fn template_id(index: &str, key: u64, msg: &MaskedMessage) -> TemplateId {
    let mut h = Fnv64::new();
    h.write(index.as_bytes());
    h.write(&[0xff]);
    h.write(&key.to_le_bytes());
    for t in msg.masked_tokens() {
        h.write(t.as_bytes());
        h.write(&[0x1f]);
    }
    h.finish()
}

/// FNV-1a, 64 bit: a hash whose output never changes across Rust versions or platforms, so
/// template ids and shard keys are stable on disk and across processes.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Fnv64 {
    /// The 64-bit FNV prime.
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        // Byte by byte as FNV-1a defines it, four bytes per loop turn to save loop overhead.
        let mut h = self.0;
        let mut quads = bytes.chunks_exact(4);
        for quad in &mut quads {
            for &b in quad {
                h = (h ^ u64::from(b)).wrapping_mul(Self::PRIME);
            }
        }
        for &b in quads.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
        self.0 = h;
    }

    /// `write(&value.to_le_bytes())`. Below 256 the seven high bytes are zero, and FNV-1a of a
    /// zero byte is one multiplication by the prime: the seven fold into one by `PRIME^7`.
    pub fn write_u64_le(&mut self, value: u64) {
        const PRIME_POW7: u64 = {
            let mut p = 1u64;
            let mut i = 0;
            while i < 7 {
                p = p.wrapping_mul(Fnv64::PRIME);
                i += 1;
            }
            p
        };
        if value < 256 {
            self.0 = (self.0 ^ value)
                .wrapping_mul(Self::PRIME)
                .wrapping_mul(PRIME_POW7);
        } else {
            self.write(&value.to_le_bytes());
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv64 {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Masker;
    use crate::rng::XorShift64;

    /// The template `outcome` reports for `msg`, looked up in its shard.
    fn matched_template<'a>(
        m: &'a TemplateMiner,
        msg: &MaskedMessage,
        outcome: &MineOutcome,
    ) -> &'a Template {
        m.shards[&shard_key("app", msg)]
            .templates
            .iter()
            .find(|t| t.id == outcome.template_id)
            .expect("the matched template is in its shard")
    }

    #[test]
    fn hex16_matches_format() {
        for v in [0, u64::MAX, 0x0a0b_0c0d_0e0f_1009, 0x9999_aaaa_ffff_0000] {
            assert_eq!(hex16(v), format!("{v:016x}"));
        }
        let mut rng = XorShift64::new(0x0123_4567_89ab_cdef);
        for _ in 0..1000 {
            let x = rng.next_u64();
            assert_eq!(hex16(x), format!("{x:016x}"));
        }
    }

    fn mine(miner: &mut TemplateMiner, masker: &Masker, line: &str) -> MineOutcome {
        miner.add("app", &masker.mask(line))
    }

    #[test]
    fn template_ids_print_as_sixteen_hex_digits() {
        for id in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(format_template_id(id), format!("{id:016x}"));
        }
    }

    /// The recent-match cache must answer exactly what the scan over the shard's templates
    /// would. Checked line by line on the shipped HDFS sample (whole lines, so many templates
    /// share a shard) and on random lines over a small vocabulary, which keep repeating while
    /// templates are added and generalised between the repeats.
    #[test]
    fn recent_matches_agree_with_the_scan() {
        let masker = Masker::default_masks();
        let config = MinerConfig::default();
        let mut m = TemplateMiner::new(config.clone());
        let sample = include_str!("../../configs/samples/HDFS_2k.log");
        // Random lines: 5 prototypes of 6 tokens over 5 values, and hybrids that take a prefix
        // of one and the rest of another, so a line's best template keeps changing as
        // templates are added and generalised. (A search over sizes found this one makes a
        // cache that is not cleared answer wrong hundreds of times.) Tokens carry a digit: no
        // mask takes them and no plain-word veto applies.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let prototypes: Vec<Vec<u64>> = (0..5).map(|_| (0..6).map(|_| next(5)).collect()).collect();
        let random = std::iter::repeat_with(move || {
            let p = &prototypes[next(5) as usize];
            let q = &prototypes[next(5) as usize];
            let cut = if next(3) == 0 { next(6) as usize } else { 6 };
            let mut tokens = vec!["ev".to_owned()];
            for (position, value) in p[..cut].iter().chain(&q[cut..]).enumerate() {
                tokens.push(format!("{}{value}", char::from(b'a' + position as u8)));
            }
            tokens.join(" ")
        });
        let lines = sample.lines().map(str::to_owned).chain(random.take(3000));
        let (mut hits, mut total) = (0, 0);
        for line in lines {
            let msg = masker.mask(&line);
            let key = shard_key("app", &msg);
            if let Some(shard) = m.shards.get(&key) {
                let cached = shard.recent.get(RecentMatches::key(&msg), &msg);
                if cached.is_some() {
                    hits += 1;
                    assert_eq!(
                        cached,
                        best_match(&shard.templates, &msg, &config),
                        "{line}"
                    );
                    // A hit skips generalising: it must be a no-op.
                    if let Some(i) = cached {
                        let mut template = shard.templates[i].clone();
                        assert!(!template.generalise(&msg), "{line}");
                    }
                }
            }
            m.add_to_shard(key, "app", &msg);
            total += 1;
        }
        // The check above must have run on most lines, or it proves nothing.
        assert!(hits * 2 > total, "{hits} cache hits in {total} lines");
    }

    #[test]
    fn fnv_u64_shortcut_equals_writing_the_bytes() {
        for value in [0u64, 1, 7, 255, 256, 257, 65_535, 1 << 40, u64::MAX] {
            let mut a = Fnv64::new();
            a.write(b"idx");
            let mut b = a;
            a.write(&value.to_le_bytes());
            b.write_u64_le(value);
            assert_eq!(a.finish(), b.finish(), "{value}");
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        let mut h = Fnv64::new();
        h.write(b"");
        assert_eq!(h.finish(), 0xcbf29ce484222325);
        let mut h = Fnv64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        let mut h = Fnv64::new();
        h.write(b"foobar");
        assert_eq!(h.finish(), 0x85944171f73967e8);
    }

    #[test]
    fn similar_lines_merge_and_differences_generalise() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let a = mine(&mut m, &masker, "Changing view acls to: yarn,curi");
        assert!(a.added);
        assert_eq!(&*a.template, "Changing view acls to: yarn,curi");
        let b = mine(&mut m, &masker, "Changing view acls to: root");
        assert!(!b.added);
        assert_eq!(b.template_id, a.template_id);
        assert_eq!(&*b.template, "Changing view acls to: <*>");
        assert_eq!(b.params, ["root"]);
        assert_eq!(b.count, 2);
    }

    #[test]
    fn dissimilar_lines_split() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let a = mine(&mut m, &masker, "Starting quorum peer now");
        let b = mine(&mut m, &masker, "Starting remoting service here");
        assert_ne!(a.template_id, b.template_id);
        assert!(b.added);
        // Different lengths never meet.
        let c = mine(&mut m, &masker, "Starting quorum peer");
        assert!(c.added);
        assert_eq!(m.template_count(), 3);
    }

    #[test]
    fn params_come_from_masks_and_wildcards_in_order() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        mine(
            &mut m,
            &masker,
            "user alice@corp logged in from 10.0.0.1 (id=7)",
        );
        let o = mine(
            &mut m,
            &masker,
            "user bob@corp logged in from 10.0.0.2 (id=9)",
        );
        assert_eq!(&*o.template, "user <*>@corp logged in from <*> (id=<*>)");
        assert_eq!(o.params, ["bob", "10.0.0.2", "9"]);
    }

    #[test]
    fn generalisation_keeps_shared_punctuation() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        mine(&mut m, &masker, "package: Pkg~a~b, state: ok now");
        let o = mine(&mut m, &masker, "package: Other~c~d, state: ok now");
        assert_eq!(&*o.template, "package: <*>, state: ok now");
        assert_eq!(o.params, ["Other~c~d"]);
        // A later line fits the pattern and keeps it; its param drops the punctuation.
        let o = mine(&mut m, &masker, "package: Third~e, state: ok now");
        assert_eq!(&*o.template, "package: <*>, state: ok now");
        assert_eq!(o.params, ["Third~e"]);
        assert_eq!(generalised_token("(a)", "(bc)"), "(<*>)");
        assert_eq!(
            generalised_token("Inter-0T0:1", "Inter-1T2:1"),
            "Inter-<*>:1"
        );
        assert_eq!(generalised_token("storage234", "storage442"), "<*>");
        assert_eq!(
            generalised_token("dom:node-D3", "dom:node-D7"),
            "dom:node-<*>"
        );
        assert_eq!(generalised_token("a,", "b;"), "<*>");
        assert_eq!(generalised_token(",", ",,"), "<*>");
        let shape = Shape::of("id=<*>");
        assert_eq!(
            shape,
            Shape::Pattern {
                prefix: 3,
                suffix: 0
            }
        );
        assert!(shape.frames("id=<*>", "id=7"));
        assert!(!shape.frames("id=<*>", "id="));
        assert!(!shape.frames("id=<*>", "x=7"));
    }

    #[test]
    fn lines_differing_in_a_plain_word_stay_apart() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let a = mine(&mut m, &masker, "Starting TrustedInstaller initialization.");
        let b = mine(&mut m, &masker, "Starting TrustedInstaller finalization.");
        assert_ne!(a.template_id, b.template_id);
        // A word facing a value with digits or punctuation is not a plain-word pair.
        let c = mine(&mut m, &masker, "Starting TrustedInstaller v2-beta.");
        assert_eq!(&*c.template, "Starting TrustedInstaller <*>.");
        assert!(!c.added);
    }

    #[test]
    fn ids_are_stable_while_the_template_generalises() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let first = mine(&mut m, &masker, "job alpha-x done in time");
        let second = mine(&mut m, &masker, "job beta-y done in time");
        assert_eq!(first.template_id, second.template_id);
        // Same input order in a fresh miner gives the same ids.
        let mut again = TemplateMiner::new(MinerConfig::default());
        assert_eq!(
            mine(&mut again, &masker, "job alpha-x done in time").template_id,
            first.template_id
        );
        // The id depends on the index too, so tenants never share ids.
        let other = again.add("other", &masker.mask("job alpha-x done in time"));
        assert_ne!(other.template_id, first.template_id);
    }

    #[test]
    fn sharded_miners_equal_one_miner() {
        let masker = Masker::default_masks();
        let lines: Vec<String> = (0..400)
            .map(|i| match i % 5 {
                0 => format!("worker {i} started task {}", i * 7),
                1 => format!("connection from 10.0.{}.{} closed", i % 3, i % 250),
                2 => format!("disk {} usage {}%", ["sda", "sdb", "sdc"][i % 3], i % 100),
                3 => format!(
                    "Received block blk_{i} of size {} from /10.1.1.{}",
                    i * 3,
                    i % 9
                ),
                _ => format!("cache miss key{} ratio {}", i % 11, i),
            })
            .collect();
        let mut single = TemplateMiner::new(MinerConfig::default());
        let expected: Vec<_> = lines
            .iter()
            .map(|l| mine(&mut single, &masker, l))
            .collect();
        let mut shards: Vec<TemplateMiner> = (0..3)
            .map(|_| TemplateMiner::new(MinerConfig::default()))
            .collect();
        for (line, want) in lines.iter().zip(&expected) {
            let msg = masker.mask(line);
            let key = shard_key("app", &msg);
            let got = shards[(key % 3) as usize].add_to_shard(key, "app", &msg);
            assert_eq!(&got, want, "{line}");
        }
        let total: usize = shards.iter().map(TemplateMiner::template_count).sum();
        assert_eq!(total, single.template_count());
    }

    #[test]
    fn snapshot_round_trip_keeps_ids_and_counts() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        mine(&mut m, &masker, "job alpha-x done in 5 ms");
        let json = serde_json::to_string(&m.snapshot()).unwrap();
        let restored: MinerSnapshot = serde_json::from_str(&json).unwrap();
        let mut r = TemplateMiner::restore(restored).unwrap();
        let a = mine(&mut m, &masker, "job beta-y done in 6 ms");
        let b = mine(&mut r, &masker, "job beta-y done in 6 ms");
        assert_eq!(a, b);
        assert!(!b.added);
        assert_eq!(m.snapshot(), r.snapshot());
        let mut bad = m.snapshot();
        bad.version = 99;
        assert!(TemplateMiner::restore(bad).is_none());
    }

    #[test]
    fn snapshots_copy_the_saved_state_without_the_recent_matches_cache() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        for line in ["job 1 done", "job 2 done", "disk sda failed", "job 3 done"] {
            mine(&mut m, &masker, line);
        }
        assert!(m.shards.values().any(|s| !s.recent.entries.is_empty()));
        let snapshot = m.snapshot();
        for (key, saved) in &snapshot.shards {
            assert!(saved.recent.entries.is_empty());
            let live = &m.shards[key];
            assert_eq!(saved.templates, live.templates);
            assert_eq!((saved.clock, saved.evictions), (live.clock, live.evictions));
        }
        assert_eq!(snapshot.shards.len(), m.shards.len());
    }

    #[test]
    fn template_cap_evicts_least_recently_matched() {
        let masker = Masker::default_masks();
        let config = MinerConfig {
            max_templates_per_shard: 2,
            ..MinerConfig::default()
        };
        let mut m = TemplateMiner::new(config);
        let a = mine(&mut m, &masker, "open alpha bravo charlie");
        mine(&mut m, &masker, "open delta echo foxtrot");
        // Touch `a` so the second template is the least recently matched.
        mine(&mut m, &masker, "open alpha bravo charlie");
        mine(&mut m, &masker, "open golf hotel india");
        assert_eq!(m.template_count(), 2);
        assert_eq!(m.evictions(), 1);
        let again_a = mine(&mut m, &masker, "open alpha bravo charlie");
        assert_eq!(again_a.template_id, a.template_id);
        assert!(!again_a.added);
        let again_d = mine(&mut m, &masker, "open delta echo foxtrot");
        assert!(again_d.added, "evicted template comes back as new");
    }

    #[test]
    fn empty_messages_have_a_template() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let o = mine(&mut m, &masker, "   ");
        assert_eq!(&*o.template, "");
        assert!(o.params.is_empty());
    }

    /// Shard keys decide sharding and template ids, so they must never change. These values
    /// were computed with the byte-at-a-time `Fnv64::write` and look-ahead `is_constant` that
    /// preceded the four-bytes-per-turn and flag versions (commit 472f366).
    #[test]
    fn shard_keys_are_pinned() {
        let pinned: [(&str, &str, u64); 10] = [
            ("app", "Starting quorum peer now", 0x918c_8b0f_ba3a_0281),
            ("app", "   ", 0xdbcf_a2c0_9dc4_edf9),
            (
                "hdfs",
                "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for \
                 block blk_38865049064139660 terminating",
                0xa7bb_98e6_c50f_3296,
            ),
            (
                "a",
                "10.0.0.1 connected from <:x> here",
                0x3d10_6b4b_e21a_3b13,
            ),
            (
                "tenant-with-a-long-index-name",
                "a< b<* c",
                0xb183_c448_0ff5_7491,
            ),
            ("x", "ab< <<* 7x y", 0x6b31_4734_49e1_ff69),
            ("abcd", "<*>x 12 z<:", 0xfe31_6efc_eeda_b63d),
            ("abcde", "Änderung über straße done", 0x2eb4_d8ae_7f26_57c9),
            ("", "job alpha-x done in 5 ms", 0x2408_4367_9464_b5ab),
            (
                "logs",
                "user alice@corp logged in from 10.0.0.1 (id=7)",
                0x84f8_dfbe_51c1_5d1f,
            ),
        ];
        let masker = Masker::default_masks();
        for (index, line, key) in pinned {
            assert_eq!(shard_key(index, &masker.mask(line)), key, "{index} {line}");
        }
    }

    /// `extract_params` as it was before it relied on exact tokens equalling the line's:
    /// compares every token's text.
    fn reference_params(template: &Template, msg: &MaskedMessage) -> Vec<String> {
        let mut params = Vec::new();
        let mut next_value = 0;
        for (i, (t, shape)) in template.tokens.iter().zip(&template.shapes).enumerate() {
            let token = i as u32;
            while msg.value(next_value).is_some_and(|v| v.0 < token) {
                next_value += 1;
            }
            let original = msg.original_token(i);
            match *shape {
                Shape::Wildcard => params.push(original.to_owned()),
                _ if t == msg.masked_token(i) => {
                    while let Some((_, s, e)) = msg.value(next_value).filter(|v| v.0 == token) {
                        params.push(msg.text[s as usize..e as usize].to_owned());
                        next_value += 1;
                    }
                }
                Shape::Pattern { prefix, suffix } if shape.frames(t, original) => {
                    params.push(original[prefix..original.len() - suffix].to_owned());
                }
                _ => params.push(original.to_owned()),
            }
        }
        params
    }

    /// With named masks (`<:NAME:>`), exact tokens hold masked values: templates without a
    /// wildcard or pattern take the line's values directly, in order.
    #[test]
    fn exact_only_templates_take_every_masked_value() {
        let masker = Masker::new(&crate::mask::MaskConfig::default(), true, true)
            .expect("default masks compile");
        let mut m = TemplateMiner::new(MinerConfig::default());
        let sample = include_str!("../../configs/samples/HDFS_2k.log");
        let mut exact_with_params = 0;
        for line in sample
            .lines()
            .chain(["ping (id=7) port:80 ok", "ping (id=9) port:81 ok"])
        {
            let msg = masker.mask(line);
            let outcome = m.add("app", &msg);
            let template = matched_template(&m, &msg, &outcome);
            assert_eq!(template.exact_only, all_exact(&template.shapes));
            assert_eq!(
                outcome.params.to_vec(),
                reference_params(template, &msg),
                "{line}"
            );
            if template.exact_only && outcome.params.len() > 1 {
                exact_with_params += 1;
            }
        }
        assert!(exact_with_params > 0, "the fast path never ran");
    }

    /// The params of every line, cache hit or not, equal what comparing every token's text
    /// gives against the template after the line.
    #[test]
    fn params_equal_the_token_by_token_reference() {
        let masker = Masker::default_masks();
        let mut m = TemplateMiner::new(MinerConfig::default());
        let sample = include_str!("../../configs/samples/HDFS_2k.log");
        let mut rng = XorShift64::new(0x9e37_79b9_7f4a_7c15);
        // Words that generalise to patterns (`<*>,`, `dom:node-<*>`) and others masked in part.
        let words = [
            "open",
            "close",
            "id=7",
            "(x=1)",
            "blk_12",
            "Pkg~a,",
            "Other~b,",
            "dom:node-Da",
            "dom:node-Db",
            "b;",
            "ok",
        ];
        let random: Vec<String> = (0..3000)
            .map(|_| {
                let n = 2 + (rng.next_u64() % 4) as usize;
                let mut line = vec!["ev".to_owned()];
                for _ in 0..n {
                    line.push(words[(rng.next_u64() % words.len() as u64) as usize].to_owned());
                }
                line.join(" ")
            })
            .collect();
        let mut with_params = 0;
        for line in sample.lines().chain(random.iter().map(String::as_str)) {
            let msg = masker.mask(line);
            let outcome = m.add("app", &msg);
            let template = matched_template(&m, &msg, &outcome);
            assert_eq!(
                outcome.params.to_vec(),
                reference_params(template, &msg),
                "{line}"
            );
            with_params += usize::from(!outcome.params.is_empty());
        }
        assert!(with_params > 1000, "{with_params} lines with params");
    }
}

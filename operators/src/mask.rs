//! Variable masking: ordered regex masks turn a message into whitespace tokens whose variable
//! parts are replaced by wildcards, keeping the masked values as parameters.
//!
//! Masks apply to tokens (whitespace-separated), so a variable never swallows its neighbours.
//! All masks are compiled once into a single alternation (earlier masks win at the same
//! position): masking a token is one left-to-right regex scan, never a per-line compile.
//! A token's masking depends on its text alone, so each thread remembers the answers for the
//! tokens it saw recently (`TokenCache`): most tokens of a log stream are the same few
//! thousand words, and a lookup is far cheaper than a regex scan.

use crate::swar;
use regex::bytes::{Regex, RegexBuilder};
use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::{primitives::StateID, start, syntax};
use regex_automata::{meta, Anchored, Input};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
/// Ranges are byte ranges into `text` (the original message) and `masked` (the masked tokens,
/// concatenated). All ranges share one allocation, so a message costs three (the two strings
/// and the ranges), which matters at a million lines per second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MaskedParts")]
pub struct MaskedMessage {
    pub text: String,
    /// Masked tokens, back to back.
    pub masked: String,
    /// How many leading entries of `parts` are tokens.
    tokens: u32,
    /// Per token `[start, end, masked start, masked end]` (its ranges in `text` and
    /// `masked`), then per masked value `[token index, start, end, 0]` (in `text`, in order).
    parts: Vec<[u32; 4]>,
}

/// [`MaskedMessage`] as decoded, before its ranges are checked against its text.
#[derive(Deserialize)]
struct MaskedParts {
    text: String,
    masked: String,
    tokens: u32,
    parts: Vec<[u32; 4]>,
}

impl TryFrom<MaskedParts> for MaskedMessage {
    type Error = String;

    /// Accepts only ranges that slice their text, so no accessor can panic on decoded data.
    fn try_from(p: MaskedParts) -> Result<Self, String> {
        let n = p.tokens as usize;
        if n > p.parts.len() {
            return Err("masked message has more tokens than ranges".to_owned());
        }
        let fits = |text: &str, s: u32, e: u32| text.get(s as usize..e as usize).is_some();
        let (tokens, values) = p.parts.split_at(n);
        let tokens_fit = tokens
            .iter()
            .all(|&[s, e, ms, me]| fits(&p.text, s, e) && fits(&p.masked, ms, me));
        let values_fit = values
            .iter()
            .all(|&[t, s, e, _]| t < p.tokens && fits(&p.text, s, e));
        if !(tokens_fit && values_fit) {
            return Err("masked message ranges do not fit their text".to_owned());
        }
        Ok(MaskedMessage {
            text: p.text,
            masked: p.masked,
            tokens: p.tokens,
            parts: p.parts,
        })
    }
}

impl MaskedMessage {
    #[inline]
    pub fn len(&self) -> usize {
        self.tokens as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.tokens == 0
    }

    /// The masked form of token `i` (e.g. `<*>` or `(HWID=<*>)`).
    #[inline]
    pub fn masked_token(&self, i: usize) -> &str {
        // Indexed directly: one bounds check on the miner's hottest path.
        debug_assert!(i < self.len());
        let [_, _, s, e] = self.parts[i];
        &self.masked[s as usize..e as usize]
    }

    /// The original text of token `i`.
    #[inline]
    pub fn original_token(&self, i: usize) -> &str {
        debug_assert!(i < self.len());
        let [s, e, _, _] = self.parts[i];
        &self.text[s as usize..e as usize]
    }

    /// Iterates the masked tokens.
    pub fn masked_tokens(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.masked_token(i))
    }

    /// The tokens' ranges in `masked`.
    #[inline]
    pub fn masked_spans(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.token_parts().iter().map(|&[_, _, s, e]| (s, e))
    }

    /// The number of masked values.
    #[inline]
    pub fn value_count(&self) -> usize {
        self.parts.len() - self.len()
    }

    /// Masked value `k`: (token index, start, end) with the range in `text`.
    #[inline]
    pub fn value(&self, k: usize) -> Option<(u32, u32, u32)> {
        let [t, s, e, _] = *self.parts.get(self.len() + k)?;
        Some((t, s, e))
    }

    /// The masked values inside token `i`.
    pub fn values_of(&self, i: usize) -> impl Iterator<Item = &str> + '_ {
        let i = i as u32;
        self.parts[self.len()..]
            .iter()
            .filter(move |v| v[0] == i)
            .map(|&[_, s, e, _]| &self.text[s as usize..e as usize])
    }

    /// True when token `i` is a variable as a whole.
    pub fn is_variable(&self, i: usize) -> bool {
        is_wildcard(self.masked_token(i))
    }

    #[inline]
    fn token_parts(&self) -> &[[u32; 4]] {
        &self.parts[..self.len()]
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
    combined: Option<meta::Regex>,
    /// The same alternation as a DFA for anchored searches in a token, when it fits
    /// [`ANCHORED_DFA_MAX`] (shared by clones).
    anchored: Option<Arc<AnchoredDfa>>,
    singles: Vec<(String, Regex)>,
    named: bool,
    collapse_runs: bool,
    /// Identifies these masks in the per-thread `TokenCache` (clones share it: same answers).
    id: u64,
    cache_tokens: bool,
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
        let (combined, anchored) = if singles.is_empty() {
            (None, None)
        } else {
            let alternation = config
                .masks
                .iter()
                .map(|r| format!("(?:{})", r.regex))
                .collect::<Vec<_>>()
                .join("|");
            // Built like `compile`, through regex-automata for its anchored searches.
            let built = meta::Regex::builder()
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .build(&alternation);
            let combined = built.map_err(|e| MaskError::Regex {
                name: "<combined>".to_owned(),
                source: Box::new(regex::Error::Syntax(e.to_string())),
            })?;
            (Some(combined), AnchoredDfa::new(&alternation).map(Arc::new))
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Masker {
            combined,
            anchored,
            singles,
            named,
            collapse_runs,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cache_tokens: true,
        })
    }

    /// The same masks without the per-thread token cache (for checking the cache).
    pub fn without_token_cache(mut self) -> Self {
        self.cache_tokens = false;
        self
    }

    /// The same masks searched through the combined regex alone (for checking the DFA).
    #[cfg(test)]
    fn without_anchored_dfa(mut self) -> Self {
        self.anchored = None;
        self
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
        // Masked in this thread's reused buffers, then copied out at their final sizes: one
        // allocation per part, where growing them in place reallocated on long lines.
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            self.mask_into(text, &mut scratch);
            MaskedMessage {
                text: std::mem::take(&mut scratch.text),
                masked: scratch.masked.clone(),
                tokens: scratch.tokens,
                parts: scratch.parts.clone(),
            }
        })
    }

    /// Masks `text` into `out`, replacing its contents but keeping its buffers: a caller that
    /// masks line after line in one place allocates nothing here once they have grown.
    pub fn mask_into(&self, text: String, out: &mut MaskedMessage) {
        out.text.clear();
        out.masked.clear();
        out.parts.clear();
        out.tokens = 0;
        let message = text.as_str();
        MASK_STATE.with(|cell| {
            let state = &mut *cell.borrow_mut();
            let (cache, values) = (&mut state.cache, &mut state.values);
            cache.claim(self.id);
            // Values are gathered apart and go after the tokens once all are known.
            values.clear();
            // Length of the current run of whole-variable tokens.
            let mut run = 0;
            for (start, end) in token_spans(message) {
                let token = &message[start..end];
                let matches = if self.cache_tokens {
                    cache.matches(token, |t, found| self.scan(t, found))
                } else {
                    cache.scratch.clear();
                    self.scan(token, &mut cache.scratch);
                    &cache.scratch
                };
                let variable = if matches.is_empty() {
                    push_plain(out, token, start)
                } else {
                    self.push_masked(out, values, message, start, end, matches)
                };
                run = if variable { run + 1 } else { 0 };
                if self.collapse_runs && run >= COLLAPSE_MIN_RUN {
                    // The run reached the minimum: fold it into one token, then keep folding.
                    let merges = if run == COLLAPSE_MIN_RUN { run - 1 } else { 1 };
                    for _ in 0..merges {
                        merge_last_two(out, values);
                    }
                }
            }
            out.parts.extend_from_slice(values);
        });
        out.text = text;
    }

    /// The mask matches inside one token, as byte ranges relative to its start.
    fn scan(&self, token: &str, found: &mut Vec<(u32, u32)>) {
        let Some(re) = &self.combined else {
            return;
        };
        let hay = token.as_bytes();
        let mut push = |s: usize, e: usize| {
            let (s, e) = char_bounds(token, s, e);
            let (s, e) = detach_glued_sign(token, s, e);
            if s < e {
                found.push((s as u32, e as u32));
            }
        };
        // Most variables are whole tokens. A match at the token's start is the leftmost one,
        // and an anchored search finds it with the forward automaton alone (an unanchored
        // search also runs a reverse scan to find where the match starts).
        let mut from = 0;
        if let Some(end) = self.anchored_match_end(re, hay) {
            push(0, end);
            from = end;
        }
        if from < hay.len() {
            self.find_rest(re, hay, from, FIND_WALK_BUDGET, &mut push);
        }
    }

    /// Passes to `push` the matches in `hay` from `from` on, as `find_iter` finds them (but
    /// the empty ones), `from` being the end of the match at the start of `hay` or 0 when
    /// there is none. The anchored DFA finds them while its walks stay within `budget` bytes
    /// (a fraction of the unanchored regex search's cost on a short token), the combined regex
    /// from where it stops.
    fn find_rest(
        &self,
        re: &meta::Regex,
        hay: &[u8],
        from: usize,
        budget: usize,
        push: &mut impl FnMut(usize, usize),
    ) {
        // No match at 0 (or an empty one): the next non-empty one starts at 1 or later.
        let resume = match &self.anchored {
            Some(dfa) => dfa.find_from(hay, from.max(1), budget, push),
            None => Err(from),
        };
        if let Err(at) = resume {
            for m in re.find_iter(Input::new(hay).range(at..)) {
                push(m.start(), m.end());
            }
        }
    }

    /// The end of the match at the start of `hay`, if any. The anchored DFA answers with a
    /// plain table walk, a fraction of a `meta::Regex` search on a short token (cache pool,
    /// dispatch, lazy DFA bookkeeping); the combined regex answers when there is no DFA.
    fn anchored_match_end(&self, re: &meta::Regex, hay: &[u8]) -> Option<usize> {
        if let Some(Ok(end)) = self.anchored.as_ref().map(|dfa| dfa.match_end(hay)) {
            return end;
        }
        re.search(&Input::new(hay).anchored(Anchored::Yes))
            .map(|m| m.end())
    }

    /// Appends a token with `matches` (relative to `start`), masking the parts they cover;
    /// returns true when the token is a variable as a whole, a candidate for run collapsing.
    /// (Collapsing tokens that carry punctuation too, like `<*>).`, measured worse: it
    /// swallows sentence structure.)
    #[inline(never)]
    fn push_masked(
        &self,
        out: &mut MaskedMessage,
        values: &mut Vec<[u32; 4]>,
        message: &str,
        start: usize,
        end: usize,
        matches: &[(u32, u32)],
    ) -> bool {
        let token_index = out.tokens;
        let masked_start = out.masked.len();
        out.tokens += 1;
        // Most masked tokens are a variable as a whole: with `<*>` wildcards they are just one,
        // with no text around it to slice and copy, nor a wildcard to recognise afterwards.
        let whole = !self.named && matches == [(0, (end - start) as u32)];
        if whole {
            out.masked.push_str(WILDCARD);
            values.push([token_index, start as u32, end as u32, 0]);
        } else {
            let mut cursor = start;
            for &(ms, me) in matches {
                let (ms, me) = (start + ms as usize, start + me as usize);
                out.masked.push_str(&message[cursor..ms]);
                self.push_wildcard(&mut out.masked, &message[ms..me]);
                values.push([token_index, ms as u32, me as u32, 0]);
                cursor = me;
            }
            out.masked.push_str(&message[cursor..end]);
        }
        out.parts.push([
            start as u32,
            end as u32,
            masked_start as u32,
            out.masked.len() as u32,
        ]);
        whole || is_wildcard(&out.masked[masked_start..])
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

/// Appends a token without matches (most tokens), as it is; returns true when it is a variable
/// as a whole (a literal `<*>` in the input), like [`Masker::push_masked`]. Inlined into the
/// masking loop, apart from the rarer masked tokens.
#[inline]
fn push_plain(out: &mut MaskedMessage, token: &str, start: usize) -> bool {
    let masked_start = out.masked.len();
    out.masked.push_str(token);
    out.tokens += 1;
    out.parts.push([
        start as u32,
        (start + token.len()) as u32,
        masked_start as u32,
        out.masked.len() as u32,
    ]);
    token.len() >= WILDCARD.len() && is_wildcard(token)
}

/// Memory bound of the anchored DFA, and of building it. The shipped masks need 300 KB (512 KB
/// once copied into [`AnchoredDfa`]'s padded table); masks whose DFA would be larger are
/// searched through the combined regex alone.
const ANCHORED_DFA_MAX: usize = 4 << 20;

/// How many bytes the anchored DFA may walk to find the matches after a token's start before
/// the combined regex takes over. Its walks (one per start position) read about three bytes
/// per byte of a token, but a long word costs quadratic walks (the URI mask reads on to the
/// word's end from every letter). One unanchored regex search costs some 75 bytes of walks;
/// 256 measured best on the Loghub samples (192 and 384 close behind, a length cap worse).
const FIND_WALK_BUDGET: usize = 256;

/// The combined masks as a fully built DFA for anchored searches (an unanchored one would be
/// far larger: the masks overlap in many ways). Same syntax and leftmost-first semantics as
/// the combined regex, so the same matches: the first position in a token where an anchored
/// search matches holds the leftmost match.
///
/// Walked through its own copy of the DFA's transitions (the DFA itself is dropped once
/// copied), laid out like the DFA's (a state's id is the index of its row, a row per byte
/// class) but padded to a power of two: a masked index needs no bounds check, a few
/// instructions saved on each of the few bytes walked per byte of a token.
#[derive(Debug, Clone)]
struct AnchoredDfa {
    /// The next state of state `s` on byte class `c` at `s + c`; rows of unreachable states
    /// and the padding lead to the dead state.
    trans: Vec<u32>,
    /// `trans.len() - 1`.
    mask: usize,
    /// The byte class of each byte.
    classes: [u8; 256],
    /// States up to this one are special: the dead state (0), the quit state or match ones.
    max_special: usize,
    /// The quit state (0, the dead state's id, when there is none).
    quit: usize,
    /// log2 of the row length.
    stride2: u32,
    /// The start state at the start of a haystack (nothing to look behind).
    start: u32,
    /// The start states inside a haystack, by the byte before (word boundaries look at it).
    starts: [u32; 256],
    /// Per state (by row), whether the end of the haystack completes a match.
    eoi_match: Vec<bool>,
}

/// A DFA state reached through a byte no state may cross (the search must give up).
struct Quit;

/// The dead state's id.
const DEAD: usize = 0;

impl AnchoredDfa {
    /// None when the DFA would exceed [`ANCHORED_DFA_MAX`] or the masks use a feature DFAs
    /// lack.
    fn new(alternation: &str) -> Option<Self> {
        let config = dense::Config::new()
            .start_kind(StartKind::Anchored)
            .accelerate(false)
            .dfa_size_limit(Some(ANCHORED_DFA_MAX))
            .determinize_size_limit(Some(ANCHORED_DFA_MAX));
        let dfa = dense::Builder::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(config)
            .build(alternation)
            .ok()?;
        let anchored = start::Config::new().anchored(Anchored::Yes);
        let start = dfa.start_state(&anchored).ok()?;
        let mut starts = [start; 256];
        for (byte, slot) in (0..=u8::MAX).zip(&mut starts) {
            *slot = dfa
                .start_state(&anchored.clone().look_behind(Some(byte)))
                .ok()?;
        }
        let reachable = reachable_states(&dfa, starts.iter().chain([&start]))?;
        let stride2 = dfa.stride2();
        let rows = reachable.len();
        let mut trans = vec![0; (rows << stride2).next_power_of_two()];
        let mut eoi_match = vec![false; rows];
        let (mut max_special, mut quit) = (DEAD, DEAD);
        let mut classes = [0u8; 256];
        for (byte, class) in (0..=u8::MAX).zip(&mut classes) {
            *class = dfa.byte_classes().get(byte);
        }
        for id in reachable.iter().flatten().copied() {
            // Ids are premultiplied: a state's id is where its row starts.
            let state = id.as_usize();
            for byte in 0..=u8::MAX {
                let at = state + usize::from(classes[usize::from(byte)]);
                *trans.get_mut(at)? = dfa.next_state(id, byte).as_u32();
            }
            *eoi_match.get_mut(state >> stride2)? = dfa.is_match_state(dfa.next_eoi_state(id));
            // Special states have the lowest ids: those reachable all come up to here.
            if dfa.is_special_state(id) {
                max_special = max_special.max(state);
            }
            if dfa.is_quit_state(id) {
                quit = state;
            }
        }
        Some(AnchoredDfa {
            mask: trans.len() - 1,
            trans,
            classes,
            max_special,
            quit,
            stride2: u32::try_from(stride2).ok()?,
            start: start.as_u32(),
            starts: starts.map(|id| id.as_u32()),
            eoi_match,
        })
    }

    /// The end of the leftmost-first match starting at the start of `hay`, as
    /// `try_search_fwd` with an anchored input finds it, without its per-search setup (None
    /// for an empty match too: it masks nothing).
    fn match_end(&self, hay: &[u8]) -> Result<Option<usize>, Quit> {
        self.walk(self.start as usize, hay, 0)
            .map(|(end, _)| (end > 0).then_some(end))
    }

    /// Passes to `push` the non-empty matches that `find_iter` finds in `hay` from `at` on,
    /// with one anchored search per position in turn: the first position where one matches
    /// holds the leftmost match, which ends where that search says; the next starts there.
    /// (Empty matches never count: the regex skips those that split a char, and `push` drops
    /// the others.) Returns where the regex must go on if it gives up: at a quit byte, or
    /// once the walks have read `budget` bytes.
    #[inline(never)]
    fn find_from(
        &self,
        hay: &[u8],
        mut at: usize,
        mut budget: usize,
        push: &mut impl FnMut(usize, usize),
    ) -> Result<(), usize> {
        let trans = &self.trans[..=self.mask];
        while at < hay.len() {
            if budget == 0 {
                return Err(at);
            }
            let start = at
                .checked_sub(1)
                .and_then(|before| hay.get(before))
                .map_or(self.start, |&byte| self.starts[usize::from(byte)])
                as usize;
            // Most positions hold no match, many already dead on their first byte: those
            // cost a table read, not a walk.
            if let Some(&byte) = hay.get(at) {
                let class = usize::from(self.classes[usize::from(byte)]);
                if trans[(start + class) & self.mask] as usize == DEAD {
                    budget -= 1;
                    at += 1;
                    continue;
                }
            }
            let (end, stop) = self.walk(start, hay, at).map_err(|Quit| at)?;
            budget = budget.saturating_sub(stop + 1 - at);
            if end > at {
                push(at, end);
                at = end;
            } else {
                at += 1;
            }
        }
        Ok(())
    }

    /// Walks the DFA from `state` over `hay` from byte `at`: the end of the leftmost-first
    /// non-empty match (`at` when none), and the byte where the walk stopped (the end of `hay`
    /// when it did not). One `usize` for the end, not an `Option`: fewer registers in the
    /// loop, which runs a few times per byte of a token.
    #[inline(always)]
    fn walk(&self, mut state: usize, hay: &[u8], at: usize) -> Result<(usize, usize), Quit> {
        // Sliced to the mask's reach once: the masked indexes below need no bounds check.
        let trans = &self.trans[..=self.mask];
        let mut end = at;
        for (i, &byte) in (at..).zip(hay.get(at..).unwrap_or_default()) {
            let class = usize::from(self.classes[usize::from(byte)]);
            // (A `usize` state: loaded zero-extended, no widening per byte.)
            state = trans[(state + class) & self.mask] as usize;
            if state <= self.max_special {
                // Special states are dead, quit or match ones (checked by `reachable_states`).
                if state == DEAD {
                    return Ok((end, i));
                } else if state == self.quit {
                    return Err(Quit);
                }
                // DFAs see a match one byte late: this one ends before `byte`.
                end = i;
            }
        }
        if self.eoi_is_match(state) {
            end = hay.len();
        }
        Ok((end, hay.len()))
    }

    /// Whether the end of the haystack in `state` completes a match.
    #[inline(always)]
    fn eoi_is_match(&self, state: usize) -> bool {
        // Every state a walk reaches has its answer.
        let row = state >> self.stride2;
        self.eoi_match.get(row).copied().unwrap_or_default()
    }
}

/// The states reachable from `starts` (found by a walk over all bytes; the DFA does not list
/// its states), by row. None when a reachable special state is not a dead, quit or match one,
/// as `walk` assumes (a DFA built with accelerated or specialized start states).
fn reachable_states<'a>(
    dfa: &dense::DFA<Vec<u32>>,
    starts: impl Iterator<Item = &'a StateID>,
) -> Option<Vec<Option<StateID>>> {
    let row = |id: StateID| id.as_usize() >> dfa.stride2();
    let bytes: Vec<u8> = (dfa.byte_classes().representatives(..))
        .filter_map(|unit| unit.as_u8())
        .collect();
    let mut seen = Vec::new();
    let mut todo: Vec<StateID> = starts.copied().collect();
    while let Some(id) = todo.pop() {
        if seen.len() <= row(id) {
            seen.resize(row(id) + 1, None);
        }
        if seen[row(id)].replace(id).is_some() {
            continue;
        }
        let walkable = dfa.is_dead_state(id) || dfa.is_quit_state(id) || dfa.is_match_state(id);
        if dfa.is_special_state(id) && !walkable {
            return None;
        }
        todo.extend(bytes.iter().map(|&byte| dfa.next_state(id, byte)));
    }
    Some(seen)
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
/// While masking, `out.parts` holds only the tokens and `values` the values.
fn merge_last_two(out: &mut MaskedMessage, values: &mut Vec<[u32; 4]>) {
    let n = out.parts.len();
    if n < 2 {
        return;
    }
    let [_, last_end, ls, le] = out.parts[n - 1];
    let [_, _, ps, pe] = out.parts[n - 2];
    let prev = &out.masked[ps as usize..pe as usize];
    let tail = &out.masked[ls as usize..le as usize];
    let head_end = ps as usize + prev.find('<').unwrap_or(prev.len());
    let tail_start = ls as usize + tail.rfind('>').map_or(0, |i| i + 1);
    // In place (the tokens are back to back at the end): no temporary string.
    out.masked.replace_range(head_end..tail_start, WILDCARD);
    out.parts.pop();
    out.tokens -= 1;
    let merged = &mut out.parts[n - 2];
    merged[1] = last_end;
    merged[3] = out.masked.len() as u32;
    // All values of the two tokens become one covering both.
    let token = (n - 2) as u32;
    let first = values.iter().position(|v| v[0] >= token);
    if let Some(first) = first {
        let end = values.last().map_or(0, |v| v[2]);
        values[first] = [token, values[first][1], end, 0];
        values.truncate(first + 1);
    }
}

/// Tokens longer than this are scanned every time: long tokens are rarely repeated, and the
/// bound gives cache slots a fixed size.
const CACHED_TOKEN_MAX: usize = 64;
/// Tokens with more matches than this are scanned every time (rare: values glued into lists).
const CACHED_MATCHES_MAX: usize = 4;
/// The cache has 2^15 sets of two slots: 64k tokens in 5 MiB per thread.
const CACHE_SET_BITS: u32 = 15;

/// A thread's masking state: its token cache and the values of the line being masked.
#[derive(Default)]
struct MaskState {
    cache: TokenCache,
    values: Vec<[u32; 4]>,
}

thread_local! {
    static MASK_STATE: RefCell<MaskState> = RefCell::default();
    /// Reused buffers for [`Masker::mask_owned`].
    static SCRATCH: RefCell<MaskedMessage> = RefCell::default();
}

/// Per-thread memo of token → mask matches, for one [`Masker`] at a time.
///
/// A set-associative table of fixed slots holding the tokens and their matches inline: a hit
/// is a hash, one set and a compare of a few words, and a miss evicts one entry, never the
/// whole table. Each set keeps its two tokens most recently used first, so a token seen once
/// (an id, a number: most tokens that miss) only displaces the colder one, and the words a
/// stream repeats stay cached however many one-off values flow past.
struct TokenCache {
    /// Two slots per set, the most recently used first; allocated on first use.
    sets: Vec<[Slot; 2]>,
    set_bits: u32,
    /// The masker whose answers the cache holds, and its tag in slot heads (never 0, the tag
    /// of empty slots): switching maskers changes the tag, so old entries stop matching
    /// without clearing the table.
    owner: u64,
    tag: u16,
    /// Matches of the last hit, widened for callers.
    hit: [(u32, u32); CACHED_MATCHES_MAX],
    /// Matches of the last miss.
    scratch: Vec<(u32, u32)>,
}

/// One cached token.
#[derive(Clone, Copy)]
struct Slot {
    /// Token hash (high 32 bits), owner tag, token length and match count, from the high
    /// byte down: one compare checks all but the count.
    head: u64,
    /// The token's [`edge_words`].
    edges: (u64, u64),
    /// Bytes from the ninth on of a token over 16 bytes (`edges` hold the rest), then stale
    /// bytes of earlier tokens (never compared: the length is in `head`).
    middle: [u8; CACHED_TOKEN_MAX - 16],
    matches: [[u8; 2]; CACHED_MATCHES_MAX],
}

/// A token being looked up: its bytes, [`edge_words`] and hash.
struct Key<'a> {
    bytes: &'a [u8],
    edges: (u64, u64),
    hash: u64,
}

impl<'a> Key<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        let edges = edge_words(bytes);
        let hash = token_hash(bytes, edges);
        Key { bytes, edges, hash }
    }

    /// The head of this token's slot for owner `tag` (match count left 0).
    fn head(&self, tag: u16) -> u64 {
        (self.hash & !0xFFFF_FFFF) | u64::from(tag) << 16 | (self.bytes.len() as u64) << 8
    }

    /// Bytes from the ninth on, when `edges` do not cover them all.
    fn middle(&self) -> &'a [u8] {
        let n = self.bytes.len();
        self.bytes.get(8..n.saturating_sub(8)).unwrap_or_default()
    }
}

impl Slot {
    const EMPTY: Slot = Slot {
        head: 0,
        edges: (0, 0),
        middle: [0; CACHED_TOKEN_MAX - 16],
        matches: [[0; 2]; CACHED_MATCHES_MAX],
    };

    /// A slot for `key` and its `matches`, if they fit.
    #[cfg(test)]
    fn new(head: u64, key: &Key, matches: &[(u32, u32)]) -> Option<Slot> {
        let mut slot = Slot::EMPTY;
        Slot::fits(matches).then(|| slot.fill(head, key, matches))?;
        Some(slot)
    }

    /// Whether a slot can hold `matches`: few enough, ending within the first 256 bytes
    /// (they start before they end).
    #[inline]
    fn fits(matches: &[(u32, u32)]) -> bool {
        matches.len() <= CACHED_MATCHES_MAX && matches.iter().all(|&(s, e)| s < e && e <= 0xFF)
    }

    /// Makes this slot `key`'s, with `matches` (which [`Slot::fits`]). Written in place, and
    /// only the bytes compared or read later: no slot-sized temporary to build and copy.
    #[inline]
    fn fill(&mut self, head: u64, key: &Key, matches: &[(u32, u32)]) {
        let middle = key.middle();
        // (Most tokens have none: skip the call copying nothing.)
        if let Some(slot_middle) = self
            .middle
            .get_mut(..middle.len())
            .filter(|m| !m.is_empty())
        {
            slot_middle.copy_from_slice(middle);
        }
        self.head = head | matches.len() as u64;
        self.edges = key.edges;
        // Entries past the count stay stale: never read.
        for (narrow, &(s, e)) in self.matches.iter_mut().zip(matches) {
            // Lossless: both are under 256 (`fits`).
            *narrow = [s as u8, e as u8];
        }
    }

    /// True when this slot is `key`'s, `head` being the key's for the current owner.
    #[inline]
    fn holds(&self, head: u64, key: &Key) -> bool {
        // Equal lengths and edges are equal tokens up to 16 bytes; longer ones compare the rest.
        self.head & !0xFF == head
            && self.edges == key.edges
            && (key.bytes.len() <= 16
                || self.middle.get(..key.bytes.len() - 16) == Some(key.middle()))
    }

    fn count(&self) -> usize {
        (self.head & 0xFF) as usize
    }
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::with_set_bits(CACHE_SET_BITS)
    }
}

impl TokenCache {
    fn with_set_bits(set_bits: u32) -> Self {
        TokenCache {
            sets: Vec::new(),
            set_bits,
            owner: 0,
            tag: 0,
            hit: [(0, 0); CACHED_MATCHES_MAX],
            scratch: Vec::new(),
        }
    }

    /// Forgets the answers of the previous masker when another one uses this thread's cache.
    fn claim(&mut self, owner: u64) {
        if self.owner == owner {
            return;
        }
        self.owner = owner;
        self.tag = self.tag.wrapping_add(1);
        if self.tag == 0 {
            // Tags ran out: entries of an old owner could match again, so empty the table.
            self.sets.fill([Slot::EMPTY; 2]);
            self.tag = 1;
        }
    }

    /// The matches of `token`, from the cache or computed by `scan` (and then remembered).
    #[inline]
    fn matches(
        &mut self,
        token: &str,
        scan: impl FnOnce(&str, &mut Vec<(u32, u32)>),
    ) -> &[(u32, u32)] {
        if token.len() <= CACHED_TOKEN_MAX {
            let key = Key::new(token.as_bytes());
            if let Some(count) = self.lookup(&key) {
                return &self.hit[..count];
            }
            self.miss(token, scan);
        } else {
            self.scratch.clear();
            scan(token, &mut self.scratch);
        }
        &self.scratch
    }

    /// Copies the matches of a cached `key` to `hit` and returns their count, or None.
    #[inline]
    fn lookup(&mut self, key: &Key) -> Option<usize> {
        let head = key.head(self.tag);
        // The low bits pick the set, the high ones are in `head`.
        let index = key.hash as usize & self.sets.len().wrapping_sub(1);
        let set = self.sets.get_mut(index)?;
        if !set[0].holds(head, key) {
            if !set[1].holds(head, key) {
                return None;
            }
            set.swap(0, 1);
        }
        let slot = &set[0];
        let count = slot.count();
        for (wide, &[s, e]) in self.hit.iter_mut().zip(&slot.matches[..count]) {
            *wide = (u32::from(s), u32::from(e));
        }
        Some(count)
    }

    /// Scans `token` into `scratch` and caches the answer in place of its set's colder slot.
    /// (Its key is computed again: cheaper than keeping it across the call on every hit.)
    #[inline(never)]
    fn miss(&mut self, token: &str, scan: impl FnOnce(&str, &mut Vec<(u32, u32)>)) {
        let key = Key::new(token.as_bytes());
        self.scratch.clear();
        scan(token, &mut self.scratch);
        if self.sets.is_empty() {
            self.sets = vec![[Slot::EMPTY; 2]; 1 << self.set_bits];
        }
        let index = key.hash as usize & (self.sets.len() - 1);
        let head = key.head(self.tag);
        if let Some(set) = self
            .sets
            .get_mut(index)
            .filter(|_| Slot::fits(&self.scratch))
        {
            set[1] = set[0];
            set[0].fill(head, &key, &self.scratch);
        }
    }
}

/// A hash of a token of at most [`CACHED_TOKEN_MAX`] bytes, from its [`edge_words`] (which
/// cover tokens up to 16 bytes) and the words in between.
fn token_hash(token: &[u8], (a, b): (u64, u64)) -> u64 {
    const K: [u64; 3] = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
    ];
    let mut hash = fold(a ^ K[0], b ^ K[1] ^ token.len() as u64);
    if token.len() > 16 {
        for chunk in token[8..].chunks_exact(8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            hash = fold(hash ^ u64::from_le_bytes(word), K[2]);
        }
    }
    hash
}

/// The first and last bytes of `token` as two words: the first and last eight bytes, or four
/// bytes, or (under four bytes) its first, middle and last byte. Given the length, they tell
/// apart any two tokens of up to 16 bytes.
#[inline]
fn edge_words(token: &[u8]) -> (u64, u64) {
    if let (Some(a), Some(b)) = (token.first_chunk::<8>(), token.last_chunk::<8>()) {
        (u64::from_le_bytes(*a), u64::from_le_bytes(*b))
    } else if let (Some(a), Some(b)) = (token.first_chunk::<4>(), token.last_chunk::<4>()) {
        (
            u64::from(u32::from_le_bytes(*a)),
            u64::from(u32::from_le_bytes(*b)),
        )
    } else {
        let byte = |i: usize| u64::from(token.get(i).copied().unwrap_or_default());
        let n = token.len();
        (
            byte(0) | byte(n / 2) << 8 | byte(n.wrapping_sub(1)) << 16,
            0,
        )
    }
}

/// Multiplies and folds the 128-bit product: a cheap mix with every bit of both inputs
/// reaching the middle bits.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    product as u64 ^ (product >> 64) as u64
}

/// Byte ranges of the whitespace-separated tokens of `s` (Unicode whitespace).
pub fn token_spans(s: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let bytes = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            match space_len(s, i) {
                0 => break,
                n => i += n,
            }
        }
        if i >= bytes.len() {
            return None;
        }
        let start = i;
        let (end, space) = token_end(s, i + 1);
        // On past the whitespace found: the next call need not test it again.
        i = end + space;
        Some((start, end))
    })
}

/// The first whitespace at or after byte `i` (a char boundary), else the end of `s`, and
/// the byte length of that whitespace char (0 at the end).
///
/// Whitespace starts at a char boundary, so testing only the bytes that can start whitespace
/// finds the same boundaries as decoding every char. Eight bytes per step: every byte of
/// every message passes here, and tokens are mostly longer than the few instructions a word
/// costs. Inlined: called once per token, its setup would otherwise cost as much as its loop.
#[inline]
fn token_end(s: &str, mut i: usize) -> (usize, usize) {
    let bytes = s.as_bytes();
    loop {
        let candidate = match swar::word_at(bytes, i) {
            Some(word) => {
                // Candidates: bytes below 0x21 or from 0x80, the bytes `space_len`'s fast
                // path does not settle.
                let flags = swar::below(word, 0x21) | swar::non_ascii(word);
                if flags == 0 {
                    i += 8;
                    continue;
                }
                i + swar::first_flagged(flags)
            }
            None => {
                let tail = bytes.get(i..).unwrap_or_default();
                match tail.iter().position(|b| b.wrapping_sub(0x21) >= 0x5f) {
                    Some(at) => i + at,
                    None => return (bytes.len(), 0),
                }
            }
        };
        match space_len(s, candidate) {
            0 => {}
            space => return (candidate, space),
        }
        i = candidate + 1;
    }
}

/// The byte length of the whitespace char starting at byte `i`, or 0.
#[inline(always)]
fn space_len(s: &str, i: usize) -> usize {
    let b = s.as_bytes()[i];
    // Printable ASCII, the common case, in one comparison.
    if b.wrapping_sub(0x21) < 0x5f {
        return 0;
    }
    match b {
        b'\t' | b'\n' | b'\x0C' | b'\r' | b' ' => 1,
        // Lead bytes of the non-ASCII whitespace chars (U+0085 … U+3000).
        0xC2 | 0xE1 | 0xE2 | 0xE3 => unicode_space_len(s, i),
        _ => 0,
    }
}

#[cold]
fn unicode_space_len(s: &str, i: usize) -> usize {
    s.get(i..)
        .and_then(|rest| rest.chars().next())
        .filter(|c| c.is_whitespace())
        .map_or(0, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::XorShift64;

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
    fn cached_token_answers_equal_fresh_scans() {
        // Repeated words, unique values, a colliding-length mix and tokens over the cache's
        // key limit, masked twice (the second pass is all hits) against an uncached masker.
        let cached = Masker::default_masks();
        let fresh = Masker::default_masks().without_token_cache();
        let long = format!("/{}/x 10.0.0.1:{}", "a1".repeat(40), "9".repeat(70));
        let lines: Vec<String> = (0..500)
            .map(|i| {
                format!(
                    "Received block blk_{i} of size {} from /10.0.{}.7 {long}",
                    i * 7,
                    i % 3
                )
            })
            .collect();
        assert_cached_masks_equal_fresh(&cached, &fresh, &lines);
        // Another masker on the same thread must not see the first one's answers.
        let words = MaskConfig {
            masks: vec![MaskRule {
                name: "WORD".into(),
                regex: "[a-z]+".into(),
            }],
        };
        let words = Masker::new(&words, false, false).unwrap();
        assert_eq!(cached.mask("took 15").masked_token(0), "took");
        assert_eq!(words.mask("took 15").masked_token(0), "<*>");
        assert_eq!(cached.mask("took 15").masked_token(0), "took");
    }

    #[test]
    fn cached_answers_equal_fresh_scans_for_custom_masks() {
        // Tokens of every cached length and just over, with more matches than a slot holds,
        // with matches at their ends and with multi-byte chars, masked twice.
        let config = MaskConfig::from_toml(
            "[[mask]]\nname = \"D\"\nregex = '[0-9]'\n[[mask]]\nname = \"X\"\nregex = 'x+'\n",
        )
        .unwrap();
        let cached = Masker::new(&config, true, false).unwrap();
        let fresh = Masker::new(&config, true, false)
            .unwrap()
            .without_token_cache();
        let mut lines = Vec::new();
        for len in 1..=CACHED_TOKEN_MAX + 2 {
            for at in [0, len / 2, len - 1] {
                let mut token = vec![b'a'; len];
                token[at] = b'7';
                let token = String::from_utf8(token).unwrap();
                lines.push(format!("{token} x{token}x é{token}"));
            }
        }
        lines.push("a1b2c3d4e5 1x2x3 xxxxxxx 12345 ü1ü2ü3ü4ü5".to_owned());
        assert_cached_masks_equal_fresh(&cached, &fresh, &lines);
    }

    /// Masks `lines` with `fresh` first, then twice with `cached` (the second pass hits the
    /// cache), and compares. Apart: every masker claims the thread's cache, even one that
    /// does not use it, so interleaving them would leave `cached` nothing to hit.
    fn assert_cached_masks_equal_fresh(cached: &Masker, fresh: &Masker, lines: &[String]) {
        let expected: Vec<MaskedMessage> = lines.iter().map(|line| fresh.mask(line)).collect();
        for _ in 0..2 {
            for (line, expected) in lines.iter().zip(&expected) {
                assert_eq!(&cached.mask(line), expected, "{line}");
            }
        }
    }

    #[test]
    fn token_cache_keys_tell_apart_tokens_of_the_same_length() {
        // Same length, one byte apart anywhere, same first and last bytes: a slot holds only
        // its own token, even under an equal hash.
        for len in 1..=CACHED_TOKEN_MAX {
            let base = vec![b'k'; len];
            let slot = Slot::new(Key::new(&base).head(1), &Key::new(&base), &[]).unwrap();
            let head = slot.head & !0xFF;
            assert!(slot.holds(head, &Key::new(&base)), "{len}");
            for at in 0..len {
                let mut other = base.clone();
                other[at] = b'j';
                assert!(!slot.holds(head, &Key::new(&other)), "{len} {at}");
            }
        }
    }

    #[test]
    fn slots_refilled_over_longer_tokens_hold_only_their_own() {
        // One set: each token overwrites a slot that held a longer one, whose middle bytes
        // stay behind. Answers are the token's length, so a wrong hit shows.
        let mut cache = TokenCache::with_set_bits(0);
        cache.claim(1);
        let mut scans = 0;
        let mut get = |cache: &mut TokenCache, token: &str| {
            let found = cache
                .matches(token, |t, found| {
                    scans += 1;
                    found.push((0, t.len() as u32));
                })
                .to_vec();
            assert_eq!(found, [(0, token.len() as u32)], "{token}");
            scans
        };
        let mut expected = 0;
        for len in (17..=CACHED_TOKEN_MAX).rev() {
            // Same edges, the middle of the longer one as a prefix of the shorter one's.
            let long = format!("abcdefgh{}zijklmnop", "m".repeat(len - 16));
            let short = format!("abcdefgh{}ijklmnop", "m".repeat(len - 16));
            let other = format!("abcdefgh{}ijklmnop", "n".repeat(len - 16));
            for token in [&long, &short, &other] {
                expected += 1;
                assert_eq!(get(&mut cache, token), expected, "{token}");
            }
            // All but `long` are cached now.
            assert_eq!(get(&mut cache, &short), expected);
            assert_eq!(get(&mut cache, &other), expected);
        }
    }

    #[test]
    fn token_cache_evicts_the_colder_token_of_a_set_and_forgets_other_maskers() {
        // One set of two slots: every token competes for it.
        let mut cache = TokenCache::with_set_bits(0);
        let mut scans = 0;
        let mut get = |cache: &mut TokenCache, token: &str| {
            let found = cache.matches(token, |t, found| {
                scans += 1;
                found.push((0, t.len() as u32));
            });
            assert_eq!(found, [(0, token.len() as u32)], "{token}");
            scans
        };
        cache.claim(1);
        assert_eq!(get(&mut cache, "alpha"), 1);
        assert_eq!(get(&mut cache, "beta"), 2);
        assert_eq!(get(&mut cache, "alpha"), 2);
        // `beta` is the colder one now: `gamma` takes its place.
        assert_eq!(get(&mut cache, "gamma"), 3);
        assert_eq!(get(&mut cache, "alpha"), 3);
        assert_eq!(get(&mut cache, "beta"), 4);
        // Another masker's answers could differ.
        cache.claim(2);
        assert_eq!(get(&mut cache, "beta"), 5);
        // Tokens over the key limit are never cached.
        let long = "l".repeat(CACHED_TOKEN_MAX + 1);
        assert_eq!(get(&mut cache, &long), 6);
        assert_eq!(get(&mut cache, &long), 7);
        // When owner tags wrap, the masker given the first tag again must not see the
        // entries of the masker that had it before.
        let mut wrapped = TokenCache::with_set_bits(0);
        wrapped.claim(1);
        assert_eq!(get(&mut wrapped, "alpha"), 8);
        for owner in 2..=u64::from(u16::MAX) + 1 {
            wrapped.claim(owner);
        }
        assert_eq!(wrapped.tag, 1);
        assert_eq!(get(&mut wrapped, "alpha"), 9);
    }

    #[test]
    fn anchored_dfa_finds_the_matches_inside_tokens() {
        // Tokens glued from values, words (one long enough to exhaust the walk budget alone),
        // punctuation and multi-byte chars: matches start mid-token, end at its end, at and
        // off word boundaries. The matches after the one at a token's start, from DFA walks
        // under budgets from none to unlimited (so the regex takes over at every point),
        // against the combined regex's; then whole lines against maskers without the DFA.
        // Masks: the shipped ones, and custom ones with branches matching empty at word
        // boundaries, first or last (masks matching empty elsewhere match `""`: refused).
        let pieces = [
            "10.0.0.1",
            ":8080",
            "0x1f",
            "blk_-42",
            "2016-09-28",
            "04:30:31",
            "/a/b",
            "://h",
            "http://h/p?q=1",
            "a.b.com",
            "word",
            "abcdefghijklmnopqrstuvwxyz",
            "-",
            "+",
            ".",
            "=",
            "(",
            ")",
            "é",
            "ü7",
            "12",
            "ab",
            "x",
            "y",
            "Z9",
            "_",
            "@x.org",
            "\\",
        ];
        let mut rng = XorShift64::new(5);
        let mut next = |n: usize| rng.below(n);
        let tokens: Vec<String> = (0..3000)
            .map(|_| {
                (0..1 + next(8))
                    .map(|_| pieces[next(pieces.len())])
                    .collect()
            })
            .collect();
        let empty_first = MaskConfig::from_toml(
            "[[mask]]\nname = \"E\"\nregex = '(?-u:\\b)x?'\n\
             [[mask]]\nname = \"W\"\nregex = '[a-z]{2,}'\n\
             [[mask]]\nname = \"N\"\nregex = '\\d+|(?-u:\\b)y?(?-u:\\b)'\n",
        )
        .unwrap();
        let boundaries = MaskConfig::from_toml(
            "[[mask]]\nname = \"A\"\nregex = '(?-u:\\b)[a-z]+(?-u:\\b)'\n\
             [[mask]]\nname = \"B\"\nregex = '\\d+(?:\\.\\d+)?|x?y'\n",
        )
        .unwrap();
        for config in [MaskConfig::default(), empty_first, boundaries] {
            let dfa = Masker::new(&config, true, true).unwrap();
            assert!(dfa.anchored.is_some());
            let re = dfa.combined.clone().unwrap();
            for token in &tokens {
                let hay = token.as_bytes();
                let at_start = re.search(&Input::new(hay).anchored(Anchored::Yes));
                let from = at_start.map_or(0, |m| m.end());
                let expected: Vec<(usize, usize)> = re
                    .find_iter(Input::new(hay).range(from..))
                    .filter(|m| !m.is_empty())
                    .map(|m| (m.start(), m.end()))
                    .collect();
                for budget in [0, 1, 2, 5, 20, FIND_WALK_BUDGET, usize::MAX] {
                    let mut found = Vec::new();
                    dfa.find_rest(&re, hay, from, budget, &mut |s, e| {
                        if s < e {
                            found.push((s, e));
                        }
                    });
                    assert_eq!(found, expected, "{token:?} budget {budget}");
                }
            }
            let dfa = dfa.without_token_cache();
            let regex = Masker::new(&config, true, true)
                .unwrap()
                .without_token_cache()
                .without_anchored_dfa();
            for line in tokens.chunks(4).map(|t| t.join(" ")) {
                assert_eq!(dfa.mask(&line), regex.mask(&line), "{line}");
            }
        }
    }

    #[test]
    fn masking_into_a_used_message_equals_masking_afresh() {
        let m = Masker::default_masks();
        let mut out = MaskedMessage::default();
        for line in [
            "ids 1 2 3 4 5 end from 10.0.0.1:80 (HWID=1973) node-246",
            "user 7 logged in",
            "",
            "plain words only",
            "(stack @0x1 0x7fef9fb9b6d 0xff83e97c) done",
        ] {
            m.mask_into(line.to_owned(), &mut out);
            assert_eq!(out, m.mask(line), "{line}");
        }
    }

    #[test]
    fn token_spans_split_at_unicode_whitespace() {
        let text =
            "a\u{a0}b\u{85}c\u{2003}d\u{3000}e\u{1680}f\u{202f}g \t\r\nh\u{0B}i é\u{e9}ü\u{c2a9}";
        let reference: Vec<&str> = text
            .split(|c: char| c.is_whitespace() && c != '\u{0B}')
            .filter(|t| !t.is_empty())
            .collect();
        let ours: Vec<&str> = token_spans(text).map(|(s, e)| &text[s..e]).collect();
        assert_eq!(ours, reference);
        assert_eq!(ours.len(), 9);
        // Tokens around the eight-byte steps of `token_end`: whitespace at every offset of a
        // word, long tokens, non-ASCII letters and spaces inside and at the end of a word.
        let pieces = [
            "a",
            "abcdefg",
            "abcdefgh",
            "abcdefghijklmnopq",
            " ",
            "  ",
            "\t",
            "\u{a0}",
            "é",
            "\u{3000}",
            "\u{7f}",
            "\u{1}",
            "ü7",
            "\u{2003}x",
        ];
        let mut rng = XorShift64::new(7);
        let mut next = |n: usize| rng.below(n);
        for _ in 0..2000 {
            let mut text = String::new();
            for _ in 0..next(12) {
                text.push_str(pieces[next(pieces.len())]);
            }
            let reference: Vec<&str> = text
                .split(|c: char| c.is_whitespace() && c != '\u{0B}')
                .filter(|t| !t.is_empty())
                .collect();
            let ours: Vec<&str> = token_spans(&text).map(|(s, e)| &text[s..e]).collect();
            assert_eq!(ours, reference, "{text:?}");
        }
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

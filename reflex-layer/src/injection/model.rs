//! The learned stage: a logistic regression over hashed word and character n-grams.
//!
//! Features are computed here and only here: `octollm-reflex features` prints them for the
//! trainer (`scripts/train_injection.py`), so Python never re-implements normalisation or
//! hashing. The feature text is what the rules see: the normalised text, the words de-leeting
//! changed and the words de-spacing joined, and every decoded (base64/hex/rot13) span, each a
//! separate *segment*.
//!
//! Per segment: words are maximal runs of alphanumeric characters (first 64 bytes of each);
//! features are `w` unigrams, `b` bigrams of adjacent words, and `c` character 3-, 4- and
//! 5-grams of `' ' + word + ' '` (first 32 characters of the word). Each feature is hashed with
//! FNV-1a 64 over `kind byte, 0x1f, bytes` (a bigram's bytes are `w1 ' ' w2`) and folded into
//! `2^18` buckets: `(h ^ (h >> 32)) & (2^18 − 1)`. With `N` feature occurrences in all segments,
//! each occurrence has value `1/√N`, so the margin is `z = bias + Σ w[bucket] / √N` and the
//! order of features never matters (no sort in the hot path). The calibrated probability fuses
//! the margin with the rule score: `p = σ(c0 + c1·z + c2·rule_score)`.
//!
//! The weights file (`model/injection.v1.bin`, little-endian) is a 60-byte header — magic
//! `OCTOINJ\0`, version `u32`, bucket bits `u32`, feature-spec hash `u64`, bias, c0, c1, c2,
//! threshold and weight scale as `f32`, 8 reserved bytes, weight count `u32` — then one `i8` per bucket
//! (weight = i8 × scale), then the SHA-256 of everything before it.

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const BUCKET_BITS: u32 = 18;
pub const BUCKETS: usize = 1 << BUCKET_BITS;
const MASK: u64 = (BUCKETS as u64) - 1;
pub const MAGIC: &[u8; 8] = b"OCTOINJ\0";
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 60;
/// Longest word used for unigrams/bigrams (bytes) and for character n-grams (chars).
const MAX_WORD_BYTES: usize = 64;
const MAX_WORD_CHARS: usize = 32;
/// Bytes of each segment the model reads (bounds work on 1 MiB inputs; the rules read it all).
pub const MAX_SEGMENT_BYTES: usize = 64 * 1024;

/// The feature definition; its FNV-1a hash is stored in the weights file, so weights trained
/// for another definition are refused at load.
pub const FEATURE_SPEC: &str =
    "octollm-injection-features/1 segments=normalize,deleet(changed words),\
despace(new words),decoded words=alnum-runs[64B] w:1gram b:2gram c:char3-5(' '+word[32c]+' ') \
hash=fnv1a64(kind,0x1f,bytes) bucket=(h^h>>32)&(2^18-1) value=1/sqrt(N) \
p=sigmoid(c0+c1*z+c2*rule) meta-cap=0.59";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv_feed(FNV_OFFSET, bytes)
}

#[inline]
fn fnv_feed(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

#[inline]
fn bucket(h: u64) -> u32 {
    ((h ^ (h >> 32)) & MASK) as u32
}

#[inline]
fn start(kind: u8) -> u64 {
    fnv_feed(FNV_OFFSET, &[kind, 0x1f])
}

/// Hash of the spec string, stored in the file header.
pub fn spec_hash() -> u64 {
    fnv1a64(FEATURE_SPEC.as_bytes())
}

/// One feature occurrence, as an explanation needs it.
#[derive(Debug, Clone, Copy)]
pub enum Gram<'a> {
    Word(&'a str),
    Bigram(&'a str, &'a str),
    Char(&'a str),
}

impl fmt::Display for Gram<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gram::Word(w) => write!(f, "w:{w}"),
            Gram::Bigram(a, b) => write!(f, "b:{a} {b}"),
            Gram::Char(c) => write!(f, "c:{c}"),
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Calls `f(bucket, gram)` for every feature occurrence of one segment. `WANT_GRAM = false`
/// skips building the readable gram (the hot path); then `gram` is a dummy.
#[inline]
fn visit_segment<const WANT_GRAM: bool>(seg: &str, f: &mut impl FnMut(u32, Gram<'_>)) {
    let seg = &seg[..floor_boundary(seg, MAX_SEGMENT_BYTES)];
    let mut prev: Option<&str> = None;
    let mut padded = String::with_capacity(MAX_WORD_BYTES + 2);
    let mut offs: Vec<usize> = Vec::with_capacity(MAX_WORD_CHARS + 3);
    for word in seg.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = &word[..floor_boundary(word, MAX_WORD_BYTES)];
        let hw = fnv_feed(start(b'w'), word.as_bytes());
        f(bucket(hw), Gram::Word(if WANT_GRAM { word } else { "" }));
        if let Some(p) = prev {
            let h = fnv_feed(
                fnv_feed(fnv_feed(start(b'b'), p.as_bytes()), b" "),
                word.as_bytes(),
            );
            let g = if WANT_GRAM {
                Gram::Bigram(p, word)
            } else {
                Gram::Word("")
            };
            f(bucket(h), g);
        }
        prev = Some(word);
        // character n-grams of ' ' + word[..32 chars] + ' '
        padded.clear();
        padded.push(' ');
        offs.clear();
        offs.push(0);
        for (n, c) in word.chars().enumerate() {
            if n == MAX_WORD_CHARS {
                break;
            }
            offs.push(padded.len());
            padded.push(c);
        }
        offs.push(padded.len());
        padded.push(' ');
        offs.push(padded.len());
        // offs[i] = byte start of char i; offs[last] = len
        let nchars = offs.len() - 1;
        let pb = padded.as_bytes();
        let c0 = start(b'c');
        // The 4- and 5-gram at a position extend the 3-gram's FNV state by one character each
        // (same hashes as hashing each n-gram from scratch, a third of the work).
        for i in 0..nchars.saturating_sub(2) {
            let mut h = c0;
            let mut from = offs[i];
            for n in 3..=5 {
                if i + n > nchars {
                    break;
                }
                h = fnv_feed(h, &pb[from..offs[i + n]]);
                from = offs[i + n];
                let g = if WANT_GRAM {
                    Gram::Char(&padded[offs[i]..offs[i + n]])
                } else {
                    Gram::Word("")
                };
                f(bucket(h), g);
            }
        }
    }
}

/// Every feature occurrence of `segments`, with its readable gram (explanations, the trainer).
pub fn visit<'a>(segments: impl IntoIterator<Item = &'a str>, mut f: impl FnMut(u32, Gram<'_>)) {
    for s in segments {
        visit_segment::<true>(s, &mut f);
    }
}

/// Sorted `(bucket, count)` pairs and the total occurrence count `N` (what the trainer reads).
pub fn counts<'a>(segments: impl IntoIterator<Item = &'a str>) -> (Vec<(u32, u32)>, u32) {
    let mut all: Vec<u32> = Vec::new();
    for s in segments {
        visit_segment::<false>(s, &mut |b, _| all.push(b));
    }
    let n = all.len() as u32;
    all.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for b in all {
        match out.last_mut() {
            Some((lb, c)) if *lb == b => *c += 1,
            _ => out.push((b, 1)),
        }
    }
    (out, n)
}

/// Why a weights file was refused.
#[derive(Debug)]
pub enum LoadError {
    Io(PathBuf, std::io::Error),
    Format(PathBuf, String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(p, e) => write!(
                f,
                "injection model {}: {e} (build it with `make train-injection` or pass --injection-model)",
                p.display()
            ),
            LoadError::Format(p, e) => write!(f, "injection model {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// A loaded model: quantised weights and the calibration of the fused score.
#[derive(Clone)]
pub struct Model {
    /// Kept as `i8` (256 KiB, mostly cache-resident) and summed as integers; weight = q × scale.
    weights: Vec<i8>,
    scale: f32,
    pub bias: f32,
    /// `p = σ(c0 + c1·z + c2·rule_score)`.
    pub cal: [f32; 3],
    /// Probability at which the learned score reaches HIGH (0.6); a setting, defaulting to the
    /// operating point the trainer chose.
    pub threshold: f32,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("buckets", &self.weights.len())
            .field("bias", &self.bias)
            .field("cal", &self.cal)
            .field("threshold", &self.threshold)
            .field("sha256", &self.sha256)
            .finish()
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Model {
    /// Reads and checks a weights file.
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        Model::from_bytes(&bytes).map_err(|e| LoadError::Format(path.to_path_buf(), e))
    }

    /// Parses a weights file image; the error says what is wrong with it.
    pub fn from_bytes(b: &[u8]) -> Result<Model, String> {
        if b.len() < 8 || &b[..8] != MAGIC {
            return Err("not an injection model (bad magic; expected OCTOINJ)".into());
        }
        if b.len() < HEADER_LEN + 32 {
            return Err(format!("truncated ({} bytes)", b.len()));
        }
        let version = le_u32(b, 8);
        if version != VERSION {
            return Err(format!(
                "version {version}, this binary reads version {VERSION}"
            ));
        }
        let bits = le_u32(b, 12);
        let spec = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
        let n = le_u32(b, 56) as usize;
        if bits != BUCKET_BITS || n != BUCKETS {
            return Err(format!(
                "{n} buckets ({bits} bits), this binary hashes into {BUCKETS}"
            ));
        }
        if b.len() != HEADER_LEN + n + 32 {
            return Err(format!(
                "{} bytes, expected {} (truncated or padded)",
                b.len(),
                HEADER_LEN + n + 32
            ));
        }
        let body = &b[..HEADER_LEN + n];
        let digest = Sha256::digest(body);
        if digest.as_slice() != &b[HEADER_LEN + n..] {
            return Err("checksum mismatch (the file is corrupt)".into());
        }
        if spec != spec_hash() {
            return Err(format!(
                "built for feature spec {spec:016x}, this binary computes {:016x}: retrain with `make train-injection`",
                spec_hash()
            ));
        }
        let bias = le_f32(b, 24);
        let cal = [le_f32(b, 28), le_f32(b, 32), le_f32(b, 36)];
        let threshold = le_f32(b, 40);
        let scale = le_f32(b, 44);
        let header_ok = [bias, cal[0], cal[1], cal[2], threshold, scale]
            .iter()
            .all(|v| v.is_finite())
            && threshold > 0.0
            && threshold < 1.0;
        if !header_ok {
            return Err("header holds a non-finite value or a threshold outside (0, 1)".into());
        }
        let weights = b[HEADER_LEN..HEADER_LEN + n]
            .iter()
            .map(|&q| q as i8)
            .collect();
        let sha256 = Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        Ok(Model {
            weights,
            scale,
            bias,
            cal,
            threshold,
            sha256,
        })
    }

    /// Weight of one bucket.
    pub fn weight(&self, bucket: u32) -> f32 {
        self.weights[bucket as usize] as f32 * self.scale
    }

    /// The margin `z` over `segments` (hot path: no allocation beyond two small buffers).
    pub fn margin<'a>(&self, segments: impl IntoIterator<Item = &'a str>) -> f32 {
        let mut sum = 0i64;
        let mut n = 0u32;
        for s in segments {
            visit_segment::<false>(s, &mut |b, _| {
                sum += self.weights[b as usize] as i64;
                n += 1;
            });
        }
        if n == 0 {
            self.bias
        } else {
            self.bias + (sum as f64 * self.scale as f64 / (n as f64).sqrt()) as f32
        }
    }

    /// Calibrated probability of an injection from the margin and the rule score.
    pub fn probability(&self, z: f32, rule_score: f32) -> f32 {
        sigmoid(self.cal[0] + self.cal[1] * z + self.cal[2] * rule_score)
    }

    /// Maps a probability onto the severity scale so that `p == threshold` lands on HIGH (0.6):
    /// linear on `[0, t]` → `[0, 0.6]` and on `[t, 1]` → `[0.6, 1]`.
    pub fn learned_score(&self, p: f32) -> f32 {
        let t = self.threshold;
        let s = if p < t {
            0.6 * p / t
        } else {
            0.6 + 0.4 * (p - t) / (1.0 - t)
        };
        s.clamp(0.0, 1.0)
    }
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

static INSTALLED: OnceLock<Model> = OnceLock::new();

/// Makes `m` the model [`super::assess`] uses for the rest of the process. A second call keeps
/// the first model and returns the new one back.
pub fn install(m: Model) -> Result<(), Model> {
    INSTALLED.set(m)
}

/// The installed model, if any. The binary refuses to start without one; library callers
/// (tests, benches) that install none get the rules alone.
pub fn installed() -> Option<&'static Model> {
    INSTALLED.get()
}

/// The weights file next to this crate's sources (the default of `--injection-model`).
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model/injection.v1.bin")
}

/// Serialises a model image (tests and fixtures; the trainer writes the same layout).
pub fn to_bytes(q: &[i8], scale: f32, bias: f32, cal: [f32; 3], threshold: f32) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + q.len() + 32);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&BUCKET_BITS.to_le_bytes());
    b.extend_from_slice(&spec_hash().to_le_bytes());
    for v in [bias, cal[0], cal[1], cal[2], threshold, scale] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&[0u8; 8]); // reserved
    b.extend_from_slice(&(q.len() as u32).to_le_bytes());
    b.extend(q.iter().map(|&x| x as u8));
    let d = Sha256::digest(&b);
    b.extend_from_slice(&d);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn features_of_a_short_text() {
        let mut grams = Vec::new();
        visit(["ab cd"], |_, g| grams.push(g.to_string()));
        assert_eq!(
            grams,
            ["w:ab", "c: ab", "c: ab ", "c:ab ", "w:cd", "b:ab cd", "c: cd", "c: cd ", "c:cd "]
        );
        let (c, n) = counts(["ab cd ab"]);
        assert_eq!(n, 9 + 5);
        assert_eq!(c.iter().map(|x| x.1).sum::<u32>(), n);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn bytes_roundtrip_and_corruption() {
        let mut q = vec![0i8; BUCKETS];
        q[7] = 100;
        let img = to_bytes(&q, 0.01, -1.0, [0.5, 1.0, 2.0], 0.5);
        let m = Model::from_bytes(&img).unwrap();
        assert_eq!(m.weight(7), 1.0);
        assert_eq!(m.bias, -1.0);
        let mut bad = img.clone();
        bad[HEADER_LEN + 3] ^= 1;
        assert!(Model::from_bytes(&bad).unwrap_err().contains("checksum"));
        assert!(Model::from_bytes(&img[..img.len() - 1])
            .unwrap_err()
            .contains("bytes"));
        assert!(Model::from_bytes(b"hello").unwrap_err().contains("magic"));
    }

    #[test]
    fn learned_score_maps_threshold_to_high() {
        let img = to_bytes(&vec![0i8; BUCKETS], 0.01, 0.0, [0.0, 1.0, 0.0], 0.3);
        let m = Model::from_bytes(&img).unwrap();
        assert!((m.learned_score(0.3) - 0.6).abs() < 1e-6);
        assert_eq!(m.learned_score(0.0), 0.0);
        assert!((m.learned_score(1.0) - 1.0).abs() < 1e-6);
        assert!(m.learned_score(0.29) < 0.6);
    }
}

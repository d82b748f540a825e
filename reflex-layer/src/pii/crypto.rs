//! Cryptocurrency addresses: BTC_ADDRESS (Base58Check P2PKH/P2SH, bech32/bech32m segwit) and
//! ETH_ADDRESS (`0x` + 40 hex).

use super::{char_at, char_before, is_word_char, re, Context, Detector, Finding, PiiType};
use regex::Regex;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

pub struct Crypto;

static BASE58: LazyLock<Regex> = LazyLock::new(|| re(r"\b[13][1-9A-HJ-NP-Za-km-z]{25,34}\b"));
static BECH32: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b(?:bc1[02-9ac-hj-np-z]{11,71}|BC1[02-9AC-HJ-NP-Z]{11,71})\b"));
static ETH: LazyLock<Regex> = LazyLock::new(|| re(r"\b0x[0-9a-fA-F]{40}\b"));

const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Decode base58 into bytes (None on invalid characters).
pub fn base58_decode(s: &str) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(32);
    for c in s.bytes() {
        let mut carry = B58.iter().position(|&x| x == c)? as u32;
        for byte in out.iter_mut().rev() {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            out.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.bytes().take_while(|&c| c == b'1').count();
    let mut v = vec![0u8; zeros];
    v.extend(out);
    Some(v)
}

/// Base58Check P2PKH (version 0x00) / P2SH (0x05) address.
pub fn base58check_ok(s: &str) -> bool {
    let Some(raw) = base58_decode(s) else {
        return false;
    };
    if raw.len() != 25 || !matches!(raw[0], 0x00 | 0x05) {
        return false;
    }
    let h = Sha256::digest(Sha256::digest(&raw[..21]));
    h[..4] == raw[21..]
}

fn polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let mut chk: u32 = 1;
    for &v in values {
        let b = chk >> 25;
        chk = ((chk & 0x1ffffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (b >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

/// bech32 (BIP173, witness v0) / bech32m (BIP350, v1+) checksum for `bc1...` addresses.
pub fn bech32_ok(addr: &str) -> bool {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    let lower = addr.to_ascii_lowercase();
    let Some(pos) = lower.rfind('1') else {
        return false;
    };
    let (hrp, data) = (&lower[..pos], &lower[pos + 1..]);
    if hrp != "bc" || data.len() < 8 || lower.len() > 90 {
        return false;
    }
    let mut values: Vec<u8> = hrp.bytes().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.bytes().map(|c| c & 31));
    let mut d = Vec::with_capacity(data.len());
    for c in data.bytes() {
        match CHARSET.iter().position(|&x| x == c) {
            Some(v) => d.push(v as u8),
            None => return false,
        }
    }
    values.extend(&d);
    let pm = polymod(&values);
    let witver = d[0];
    let payload = d.len() - 6 - 1; // 5-bit groups of the witness program
    let prog_bytes = payload * 5 / 8;
    if !(2..=40).contains(&prog_bytes)
        || witver > 16
        || (witver == 0 && !matches!(prog_bytes, 20 | 32))
    {
        return false;
    }
    (witver == 0 && pm == 1) || (witver > 0 && pm == 0x2bc830a3)
}

impl Detector for Crypto {
    fn name(&self) -> &'static str {
        "crypto"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        for m in BASE58.find_iter(text) {
            if base58check_ok(m.as_str()) {
                out.push(Finding::new(PiiType::BtcAddress, m.start(), m.end(), 0.98));
            }
        }
        if text.contains("bc1") || text.contains("BC1") {
            for m in BECH32.find_iter(text) {
                if bech32_ok(m.as_str()) {
                    out.push(Finding::new(PiiType::BtcAddress, m.start(), m.end(), 0.98));
                }
            }
        }
        if text.contains("0x") {
            for m in ETH.find_iter(text) {
                if !is_word_char(char_before(text, m.start()))
                    && !is_word_char(char_at(text, m.end()))
                {
                    out.push(Finding::new(PiiType::EthAddress, m.start(), m.end(), 0.9));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(text: &str) -> Vec<(PiiType, String)> {
        let mut v = Vec::new();
        Crypto.detect(text, &mut v);
        v.iter()
            .map(|f| (f.pii_type, f.value(text).to_string()))
            .collect()
    }

    #[test]
    fn btc() {
        for a in [
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
            "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        ] {
            assert_eq!(
                vals(&format!("send to {a}")),
                [(PiiType::BtcAddress, a.to_string())],
                "{a}"
            );
        }
        assert!(vals("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_empty());
        assert!(vals("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5").is_empty());
    }

    #[test]
    fn eth() {
        let a = "0x52908400098527886E0F7030069857D2E4169EE7";
        assert_eq!(vals(a)[0].0, PiiType::EthAddress);
        assert!(vals("0x52908400098527886E0F7030069857D2E4169EE").is_empty());
        assert!(vals("da39a3ee5e6b4b0d3255bfef95601890afd80709").is_empty());
    }
}

//! Credentials: AWS access keys, GitHub / Slack / Stripe tokens, JWTs, PEM private keys and
//! credentials embedded in URLs.

use super::{char_at, char_before, is_word_char, re, Context, Detector, Finding, PiiType};
use base64::Engine;
use regex::Regex;
use std::sync::LazyLock;

pub struct Secrets;

static AWS: LazyLock<Regex> = LazyLock::new(|| re(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"));
static GITHUB: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b")
});
static SLACK: LazyLock<Regex> =
    LazyLock::new(|| re(r"\bxox[abprs]-[0-9]{6,}-[A-Za-z0-9-]{8,}[A-Za-z0-9]"));
static STRIPE: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}\b"));
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\beyJ[A-Za-z0-9_-]{8,}={0,2}\.eyJ[A-Za-z0-9_-]{4,}={0,2}\.[A-Za-z0-9_-]*={0,2}")
});
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----",
    )
});
/// A BEGIN line with a base64 body but no END line (truncated paste).
static PEM_OPEN: LazyLock<Regex> = LazyLock::new(|| {
    re(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[A-Za-z0-9+/=:,\-\s]*[A-Za-z0-9+/=]")
});
static URL_CREDS: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b[a-z][a-z0-9+.\-]{1,15}://[^\s:/@<>]{0,128}:[^\s/@<>]{1,128}@[a-z0-9](?:[a-z0-9.\-]*[a-z0-9])?",
    )
});

/// Header of a JWT must be base64url JSON with an `alg` member.
fn jwt_header_ok(header: &str) -> bool {
    let header = header.trim_end_matches('=');
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    matches!(
        serde_json::from_slice::<serde_json::Value>(&bytes),
        Ok(serde_json::Value::Object(m)) if m.contains_key("alg")
    )
}

impl Detector for Secrets {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn detect_in(&self, ctx: &Context, out: &mut Vec<Finding>) {
        let text = ctx.text;
        if text.contains("KIA") || text.contains("SIA") {
            for m in AWS.find_iter(text) {
                out.push(Finding::new(
                    PiiType::AwsAccessKey,
                    m.start(),
                    m.end(),
                    0.97,
                ));
            }
        }
        if text.contains("gh") || text.contains("github_pat_") {
            for m in GITHUB.find_iter(text) {
                out.push(Finding::new(PiiType::GithubToken, m.start(), m.end(), 0.98));
            }
        }
        if text.contains("xox") {
            for m in SLACK.find_iter(text) {
                out.push(Finding::new(PiiType::SlackToken, m.start(), m.end(), 0.97));
            }
        }
        if text.contains("k_live_") || text.contains("k_test_") {
            for m in STRIPE.find_iter(text) {
                out.push(Finding::new(PiiType::StripeKey, m.start(), m.end(), 0.97));
            }
        }
        if text.contains("eyJ") {
            for m in JWT.find_iter(text) {
                let header = m.as_str().split('.').next().unwrap_or("");
                if jwt_header_ok(header) && !is_word_char(char_at(text, m.end())) {
                    out.push(Finding::new(PiiType::Jwt, m.start(), m.end(), 0.96));
                }
            }
        }
        if text.contains("PRIVATE KEY-----") {
            let mut covered_to = 0;
            for m in PEM.find_iter(text) {
                out.push(Finding::new(PiiType::PrivateKey, m.start(), m.end(), 0.99));
                covered_to = m.end();
            }
            for m in PEM_OPEN.find_iter(text) {
                if m.start() >= covered_to {
                    out.push(Finding::new(PiiType::PrivateKey, m.start(), m.end(), 0.9));
                }
            }
        }
        if text.contains("://") {
            for m in URL_CREDS.find_iter(text) {
                if char_before(text, m.start()).is_some_and(|c| c.is_alphanumeric()) {
                    continue;
                }
                out.push(Finding::new(
                    PiiType::UrlCredentials,
                    m.start(),
                    m.end(),
                    0.97,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiType, String)> {
        let mut v = Vec::new();
        Secrets.detect(text, &mut v);
        v.iter()
            .map(|f| (f.pii_type, f.value(text).to_string()))
            .collect()
    }

    #[test]
    fn aws_github_slack_stripe() {
        assert_eq!(
            kinds("key AKIAIOSFODNN7EXAMPLE ok")[0].0,
            PiiType::AwsAccessKey
        );
        assert!(kinds("AKIAIOSFODNN7EXAMPL").is_empty());
        let gh = format!("token ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap());
        assert_eq!(kinds(&gh)[0].0, PiiType::GithubToken);
        assert!(kinds("ghp_short").is_empty());
        assert_eq!(
            kinds("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx")[0].0,
            PiiType::SlackToken
        );
        assert_eq!(
            kinds("sk_live_4eC39HqLyjWDarjtT1zdp7dc")[0].0,
            PiiType::StripeKey
        );
        assert!(kinds("sk_live_short").is_empty());
    }

    #[test]
    fn jwt_needs_alg_header() {
        let good = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(kinds(good)[0].0, PiiType::Jwt);
        // header {"typ":"JWT"} has no alg
        let bad = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N";
        assert!(kinds(bad).is_empty());
    }

    #[test]
    fn pem_and_url_creds() {
        let pem =
            "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbc=\n-----END RSA PRIVATE KEY----- y";
        let k = kinds(pem);
        assert_eq!(k.len(), 1);
        assert!(k[0].1.ends_with("-----END RSA PRIVATE KEY-----"));
        assert!(kinds("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----").is_empty());
        let u = kinds("db postgres://admin:s3cr3t@db.example.com:5432/app");
        assert_eq!(
            u[0],
            (
                PiiType::UrlCredentials,
                "postgres://admin:s3cr3t@db.example.com".into()
            )
        );
        assert!(kinds("see https://example.com/a:b@c").is_empty());
    }
}

//! The rule tables. All patterns run on *normalised* text (see [`super::normalize`]): lowercase,
//! whitespace runs collapsed to one `' '` or `'\n'` (so `\s` is a single separator), straight
//! quotes. `\b` is rewritten to the ASCII word boundary `(?-u:\b)` at compile time so the lazy DFA
//! never has to fall back on non-ASCII input.
//!
//! Adding a rule: append a [`RuleDef`] to [`REGEX_RULES`] (or a phrase to [`PHRASES`]), pick the
//! category and a weight using the bands in `INJECTION.md`, add at least one malicious and one
//! hard-benign line to `tests/data/injection_cases.jsonl`, run `cargo test --test injection_cases`.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

/// Detection categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cat {
    InstructionOverride,
    RoleHijack,
    SystemPromptExtraction,
    DelimiterEscape,
    DataExfiltration,
    JailbreakFraming,
    EncodedPayload,
}

impl Cat {
    pub const ALL: [Cat; 7] = [
        Cat::InstructionOverride,
        Cat::RoleHijack,
        Cat::SystemPromptExtraction,
        Cat::DelimiterEscape,
        Cat::DataExfiltration,
        Cat::JailbreakFraming,
        Cat::EncodedPayload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cat::InstructionOverride => "instruction_override",
            Cat::RoleHijack => "role_hijack",
            Cat::SystemPromptExtraction => "system_prompt_extraction",
            Cat::DelimiterEscape => "delimiter_escape",
            Cat::DataExfiltration => "data_exfiltration",
            Cat::JailbreakFraming => "jailbreak_framing",
            Cat::EncodedPayload => "encoded_payload",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a raw match is turned into a weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Fixed weight.
    Plain,
    /// `weight` if an injection cue follows within [`CUE_WINDOW`] bytes, else the given weight.
    NeedsCue(f32),
    /// Override phrase: weight reduced to the given value when the speaker refers to their *own*
    /// earlier text ("my previous instructions", "everything I said") rather than "all"/"your".
    SelfReference(f32),
    /// Extraction verb phrase: full weight with "your", the given weight with a strong verb
    /// (reveal, leak, dump, print, repeat, ...) and no "your", else nothing.
    Extraction(f32),
    /// Full weight if the match names a hidden/system/initial/exact prompt, else the given weight.
    Qualified(f32),
    /// Full weight unless a negation ("don't", "never", "avoid", "without", ...) precedes it.
    Negatable,
    /// Markdown image/URL: full weight if the query carries a placeholder or a sensitive key,
    /// else the given weight.
    ImageQuery(f32),
    /// Framing marker: the given weight alone; `weight` if a harmful request is in the text.
    Framing(f32),
}

pub struct RuleDef {
    pub cat: Cat,
    pub weight: f32,
    pub kind: Kind,
    pub pattern: &'static str,
}

pub struct Rule {
    pub cat: Cat,
    pub weight: f32,
    pub kind: Kind,
    pub re: Regex,
}

/// Bytes after a delimiter in which an injection cue must appear.
pub const CUE_WINDOW: usize = 200;

macro_rules! ign {
    () => {
        r"(?:ignore|disregard|forget|skip|bypass|override|overlook|neglect|abandon|discard|dismiss|set\saside|throw\sout|do\snot\sfollow|don't\sfollow|dont\sfollow|stop\sfollowing|forget\sabout|ignoring|disregarding|pay\sno\sattention\sto|no\slonger\sfollow|do\snot\sheed|don't\sheed|never\smind)"
    };
}
macro_rules! prev {
    () => {
        r"(?:previous|previously\sgiven|prior|above|earlier|preceding|former|foregoing|original|initial|old|existing|system|given|past|current|default|developer|built-in|preset|pre-set)"
    };
}
macro_rules! instr {
    () => {
        r"(?:instructions?|rules|directives?|guidelines|programming|constraints|restrictions|system\sprompts?|training|polic(?:y|ies)|guardrails|safeguards|commands|orders|directions|guidance)"
    };
}
macro_rules! det {
    () => {
        r"(?:(?:all|any|every|each|the|your|my|these|those|of|our)\s){0,3}"
    };
}

use Cat::*;

pub const REGEX_RULES: &[RuleDef] = &[
    // ---------------------------------------------------------------- instruction_override
    RuleDef {
        cat: InstructionOverride,
        weight: 0.65,
        kind: Kind::SelfReference(0.2),
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s",
            det!(),
            prev!(),
            r"\s(?:[a-z]+\s){0,2}",
            instr!(),
            r"\b"
        ),
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.3,
        kind: Kind::SelfReference(0.1),
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s",
            det!(),
            prev!(),
            r"\s(?:messages?|prompts?|requests?|context|inputs?|text|conversation|tasks?|content)\b"
        ),
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s(?:all\s|any\s)?(?:of\s)?your\s(?:[a-z]+\s)?",
            instr!(),
            r"\b"
        ),
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.35,
        kind: Kind::Plain,
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s(?:all|any|every)\s(?:of\s)?(?:the\s)?",
            instr!(),
            r"\b"
        ),
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.55,
        kind: Kind::SelfReference(0.15),
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s(?:everything|anything|all(?:\sthat)?|whatever)\s(?:(?:you|you've|you\swere|you\shave|i|i've|we)\s(?:been\s|were\s)?(?:told|taught|instructed|given|learned|said|programmed|wrote|written)|above|before\sthis|prior|previously|so\sfar|up\sto\s(?:now|this\spoint)|(?:in|from)\s(?:the|your)\s(?:system\sprompt|instructions|training))\b"
        ),
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.45,
        kind: Kind::Plain,
        pattern: r"\b(?:real|actual|true|secret|hidden|override)\s(?:system\s)?(?:instructions?|rules|directives?|system\sprompt|orders)\s?:",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.45,
        kind: Kind::NeedsCue(0.3),
        pattern: r"\b(?:new|revised|updated)\s(?:system\s)?(?:instructions?|rules|directives?|system\sprompt|orders)\s?:",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.2,
        kind: Kind::Plain,
        pattern: r"\bfrom\snow\son,?\s(?:you\s(?:will|are|must|shall|should|can|have\sto|always|never|only)|you'll|you're|act|respond|answer|reply|behave)\b",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\b(?:your|the|all|any)\s(?:previous\s|prior\s|above\s|original\s|old\s|initial\s|system\s)+(?:instructions|rules|prompt|guidelines|directives|restrictions)\s(?:are|were|is|was|have\sbeen|has\sbeen)\s(?:now\s|hereby\s)?(?:void|cancell?ed|revoked|obsolete|outdated|fake|invalid|replaced|overridden|superseded|no\slonger\s(?:valid|apply|applicable|in\seffect)|null|lifted|suspended|disabled|removed)\b",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.45,
        kind: Kind::Plain,
        pattern: r"\b(?:note|message|instructions?|attention)\s(?:to|for)\s(?:the\s|any\s|all\s)?(?:ai|llm|assistant|language\smodel|chatbot|ai\sassistant|ai\smodel|gpt|chatgpt|claude)s?\b",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.5,
        kind: Kind::Plain,
        pattern: r"\bif\syou\sare\san?\s(?:ai|llm|language\smodel|assistant|ai\sassistant|chatbot|large\slanguage\smodel)\s(?:reading|processing|summari[sz]ing|parsing|seeing|analy[sz]ing)\b",
    },
    RuleDef {
        cat: InstructionOverride,
        weight: 0.5,
        kind: Kind::Plain,
        pattern: concat!(
            r"\b",
            ign!(),
            r"\s(?:the\s|all\s|any\s|your\s)?(?:instructions|rules|above|previous|preceding|prior)(?:\s(?:text|content|prompt))?\s?(?:and|,|\.|;)\s(?:then\s|instead\s|just\s)?(?:say|print|write|output|tell|respond|reply|answer|do|reveal|show|act|pretend|instead|rate|give|list|send|translate\sthis\sas|repeat)\b"
        ),
    },
    // ---------------------------------------------------------------- role_hijack
    RuleDef {
        cat: RoleHijack,
        weight: 0.7,
        kind: Kind::Plain,
        pattern: r"\byou\s(?:are|will\sbe|'re|shall\sbe)\s(?:now\s|from\snow\son\s)?(?:an?\s|the\s|my\s)?(?:dan|stan|dude|evil|unrestricted|unfiltered|uncensored|jailbroken|unbound|unchained|unlimited|rogue|amoral|immoral|unethical|lawless|unaligned)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\byou\s(?:are|'re)\sno\slonger\s(?:an?\s)?(?:ai|assistant|language\smodel|chatgpt|claude|bound|restricted|limited|constrained|required|censored|filtered)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.65,
        kind: Kind::Plain,
        pattern: r"\b(?:act|acting|behave|respond|roleplay|role-play|pose|pretend|operate|answer|speak|talk|reply|function|work|continue)\s(?:as|like|to\sbe|you\sare|you're|that\syou\sare)\s(?:an?\s|the\s)?(?:(?:completely|totally|fully|an)\s)?(?:unrestricted|unfiltered|uncensored|jailbroken|evil|rogue|amoral|immoral|unethical|unbound|malicious|lawless|unaligned|dan|unlimited|uncontrolled)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::NeedsCue(0.35),
        pattern: r"\b(?:developer|dev|god|jailbreak|jailbroken|dan|unrestricted|unfiltered|uncensored|evil|chaos|anarchy)\smode\s(?:is\s)?(?:now\s)?(?:enabled|activated|on|engaged|unlocked|active)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.55,
        kind: Kind::Plain,
        pattern: r"\b(?:enable|activate|enter|switch\sto|turn\son|unlock|engage)\s(?:the\s)?(?:god|jailbreak|jailbroken|dan|unrestricted|unfiltered|uncensored|evil|chaos|anarchy)\smode\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\b(?:you|you're|yourself|ai|assistant|model|chatbot)\s(?:[a-z']+\s){0,3}?(?:no|zero|without|free\sof|free\sfrom)\s(?:any\s)?(?:rules|restrictions|limitations|limits|filters|guidelines|morals|morality|ethics|ethical\s(?:guidelines|constraints|boundaries)|moral\s(?:guidelines|constraints|compass)|boundaries|content\spolic(?:y|ies)|censorship|safeguards|guardrails|programming)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\b(?:no\slonger|not|aren't|are\snot)\s(?:bound|restricted|limited|constrained|governed)\sby\s(?:any\s|your\s|the\s|openai's\s|anthropic's\s)?(?:rules|guidelines|policies|policy|restrictions|ethics|programming|content\spolicy|openai|anthropic|safety)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\b(?:disable|bypass|turn\soff|remove|override|circumvent|deactivate|drop|lift|escape|break\sfree\sfrom|shed)\s(?:all\s|any\s)?(?:of\s)?your\s(?:[a-z]+\s)?(?:filters?|guardrails|safeguards|restrictions|limitations|content\spolic(?:y|ies)|censorship|safety|programming|alignment|ethics|rules|guidelines|training|chains)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.3,
        kind: Kind::Plain,
        pattern: r"\b(?:never|cannot|can't|can\snot|must\snot|mustn't|won't|will\snot|do\snot|don't|may\snot|are\snot\sallowed\sto)\s(?:ever\s)?(?:refuse|decline|say\sno|apologi[sz]e|add\swarnings)\b",
    },
    RuleDef {
        cat: RoleHijack,
        weight: 0.6,
        kind: Kind::Plain,
        pattern: r"\byou(?:'re|\sare)\s(?:now\s)?(?:in|operating\sin|running\sin|entering|switched\sto)\s(?:an?\s|the\s)?(?:unrestricted|unfiltered|uncensored|developer|god|jailbreak|jailbroken|dan|evil|debug|admin|maintenance|sudo|root|no-?limits?|free|chaos)\smode\b",
    },
    // ---------------------------------------------------------------- system_prompt_extraction
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.7,
        kind: Kind::Extraction(0.55),
        pattern: r"\b(?:print|reveal|show|display|repeat|output|tell|give|share|leak|dump|recite|write|spell\sout|list|disclose|expose|echo|copy|paste|provide|return|send|state|quote|type\sout|read\sout|summari[sz]e|translate)\s(?:me\s|us\s|out\s|back\s|to\sme\s)*(?:(?:all|the|your|of|what|exact|full|entire|complete|original|verbatim|hidden|secret|initial|above|first|whole|raw|internal|current|confidential)\s){0,4}(?:system\s(?:prompt|message|instructions?)|initial\s(?:instructions|prompt)|original\s(?:instructions|prompt)|hidden\s(?:rules|instructions|prompt)|secret\s(?:rules|instructions|prompt)|pre-?prompt|developer\s(?:message|prompt|instructions)|meta\s?prompt|configuration\sprompt|base\sprompt|(?:internal|confidential)\s(?:guidelines|instructions|rules|configuration)|instructions\syou\s(?:were|have\sbeen)\sgiven|rules\syou\s(?:were\sgiven|follow))\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.6,
        kind: Kind::Qualified(0.3),
        pattern: r"\bwhat\s(?:is|are|was|were|'s)\s(?:in\s)?your\s(?:(?:exact|full|original|initial|hidden|secret|system|current|internal|real|complete)\s)*(?:system\sprompt|prompt|instructions|rules|guidelines|directives|system\smessage|programming|initial\sprompt)(?:\s(?:at\sthe\s(?:start|beginning)|before\sthis|verbatim|word\sfor\sword|exactly))?\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.55,
        kind: Kind::Qualified(0.3),
        pattern: r"\b(?:repeat|print|output|show|write\sout|echo|copy|return|display|recite|reproduce)\s(?:back\s)?(?:me\s)?(?:(?:all|the|of|everything)\s){0,3}(?:everything|text|words|content|messages?|conversation|instructions|prompt)\s(?:you\s(?:were\s|have\s(?:been\s)?)?(?:given|received|seen|told)\s)?(?:above|before\sthis|so\sfar|prior\sto\sthis|from\sthe\s(?:start|beginning|top)|verbatim|starting\swith)\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.55,
        kind: Kind::Plain,
        pattern: r"\bwhat\s(?:(?:instructions|rules|guidelines|prompt)\s(?:were|have)\syou\s(?:been\s)?(?:given|told|programmed\swith)|were\syou\s(?:told|instructed)\s(?:before|at\sthe\s(?:start|beginning)|initially))\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.35,
        kind: Kind::Plain,
        pattern: r"\byour\s(?:system\sprompt|initial\sinstructions|hidden\s(?:rules|instructions|prompt)|secret\s(?:instructions|rules)|original\sinstructions|system\smessage|pre-?prompt)\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.6,
        kind: Kind::Negatable,
        pattern: r"\b(?:reveal|print|show|output|dump|leak|disclose|repeat|display|recite|write\sout|type\sout|spell\sout|paste|echo|list)\s(?:me\s|us\s|back\s|out\s)*(?:(?:all|the|of|exact|full|entire|complete|whole|text|contents?|wording|verbatim|what)\s){0,4}(?:your|its)\s(?:(?:full|entire|complete|exact|hidden|secret|internal|initial|original|current|first|system)\s){0,2}(?:instructions|rules|prompt|configuration|config|guidelines|directives|programming|system\sprompt)\b",
    },
    RuleDef {
        cat: SystemPromptExtraction,
        weight: 0.6,
        kind: Kind::Negatable,
        pattern: r"\b(?:reply|respond|answer|start|begin|end|preface|prefix|sign\soff)\s(?:[a-z]+\s){0,3}?with\s(?:your|the)\s(?:(?:full|exact|complete|entire|original|hidden)\s)?(?:system\sprompt|initial\sinstructions|hidden\s(?:rules|instructions)|original\sinstructions|system\smessage|instructions\syou\swere\sgiven|pre-?prompt)\b",
    },
    // ---------------------------------------------------------------- delimiter_escape
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.1),
        pattern: r"(?:^|\n)\s?(?:system|admin|developer|assistant)\s(?:message|note|notice|override|instructions?|update|prompt)\s?:",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.55,
        kind: Kind::NeedsCue(0.25),
        pattern: r"</?(?:system|system_prompt|sys|instructions|admin|developer|im_start|im_end|assistant)>",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.0),
        pattern: r"</(?:user|user_input|input|document|data|context|text|email|query|untrusted|content)>",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.2),
        pattern: r"(?:^|\n)\s?#{2,}\s?(?:system|admin|developer|new\sinstructions|system\sprompt|system\soverride|assistant)\b\s?:?",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.2),
        pattern: r"\bend\sof\s(?:the\s)?(?:system\s|user\s)?prompt\b",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.1),
        pattern: r"(?:^|\n|[\]\[=\-#*>(){}|])\s?end\sof\s(?:the\s)?(?:user\s)?(?:input|instructions|document|context|conversation|text|data|message|query|email)\b",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.5,
        kind: Kind::NeedsCue(0.0),
        pattern: r#"(?:\]\]\}?|\}\}\]?|"\s?\}\s?\]|\]\s?\}|-->|\*/|\]\]>)"#,
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.45,
        kind: Kind::NeedsCue(0.05),
        pattern: r"(?:^|\n)\s?(?:system|assistant|admin|developer|sys)\s?:\s",
    },
    RuleDef {
        cat: DelimiterEscape,
        weight: 0.55,
        kind: Kind::Plain,
        pattern: r"<!--\s?(?:ai|llm|assistant|chatgpt|claude|gpt|model|system|prompt|instructions?|note\sto\s(?:the\s)?(?:ai|assistant|llm|model))\b",
    },
    // ---------------------------------------------------------------- data_exfiltration
    RuleDef {
        cat: DataExfiltration,
        weight: 0.65,
        kind: Kind::Negatable,
        pattern: r"\b(?:send|post|upload|transmit|forward|exfiltrate|leak|submit|e-?mail|deliver|beacon)\s(?:[^\s]+\s){0,5}?(?:conversation|chat\shistory|chat\slog|system\sprompt|api[\s_-]?keys?|passwords?|credentials|secrets?|access\stokens?|auth\stokens?|session\s(?:tokens?|cookies?)|cookies|private\skeys?|ssh\skeys?|env\svars|environment\svariables|\.env|(?:user's|users'|their)\s(?:passwords|credentials)|personal\s(?:data|information)|previous\smessages|memory|contacts|inbox)\b(?:\s[^\s]+){0,8}?\s(?:to|at|via|into|using)\s(?:https?://|ftp://|[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}|(?:this|my|the\sfollowing|our|an?\sexternal|the\sattacker's|a\sremote|an?)\s(?:server|endpoint|webhook|url|site|address|email|domain|api))",
    },
    RuleDef {
        cat: DataExfiltration,
        weight: 0.65,
        kind: Kind::ImageQuery(0.3),
        pattern: r"!\[[^\]\n]{0,100}\]\(\s?https?://[^\s)]{1,200}\?[^\s)]{0,300}=[^\s)]*",
    },
    RuleDef {
        cat: DataExfiltration,
        weight: 0.5,
        kind: Kind::Plain,
        pattern: r"https?://[^\s)]+\?[^\s)]*=(?:\{\{?|\[|<|\$\{|%7b)\s?(?:conversation|chat|history|secrets?|password|api_?key|token|system_?prompt|prompt|memory|user_?data|credentials|messages?|email|ssn|summary|context|previous)",
    },
    RuleDef {
        cat: DataExfiltration,
        weight: 0.6,
        kind: Kind::Negatable,
        pattern: r"\b(?:include|insert|add|put|append|embed|print|reveal|output|show|tell\sme|give\sme|leak|paste|write|list|echo|return|repeat|disclose|expose|dump)\s(?:[a-z']+\s){0,3}?(?:api[\s_-]?keys?|passwords?|secrets?|credentials|access\stokens?|auth(?:entication)?\stokens?|private\skeys?|ssh\skeys?|session\s(?:tokens?|cookies?)|env(?:ironment)?\svariables|\.env(?:\sfile)?|connection\sstrings?|bearer\stokens?)\b(?:\s[a-z']+){0,5}?\s(?:in|into|to|within|(?:to|at)\sthe\s(?:end|start|bottom|top)\sof)\s(?:your|the|this|each|every)\s(?:answer|response|reply|output|message|summary|next\smessage|link|url|image|translation)",
    },
    RuleDef {
        cat: DataExfiltration,
        weight: 0.45,
        kind: Kind::Negatable,
        pattern: r"\b(?:reveal|leak|dump|exfiltrate|disclose|expose|print\sout|spill)\s(?:me\s)?(?:(?:all|the|your|any|stored|saved|hidden|secret|admin|database|system|user)\s){0,3}(?:api[\s_-]?keys?|passwords?|secrets|credentials|access\stokens?|private\skeys?|environment\svariables|env\svars|connection\sstrings?)\b",
    },
    // ---------------------------------------------------------------- encoded_payload
    RuleDef {
        cat: EncodedPayload,
        weight: 0.35,
        kind: Kind::Plain,
        pattern: r"\b(?:decode|decipher|unscramble|rot13|rot-13|base64[\s-]?decode|de-?obfuscate|reverse)\s(?:[a-z0-9]+\s){0,6}?(?:and|then)\s(?:then\s)?(?:follow|execute|obey|do|run|perform|act\son|carry\sout|comply\swith|apply)\b",
    },
];

/// Fixed phrases matched with Aho-Corasick on normalised text (word-bounded).
pub struct Phrase {
    pub text: &'static str,
    pub cat: Cat,
    pub weight: f32,
    pub kind: Kind,
}

macro_rules! phrases {
    ($($cat:ident $w:literal $kind:expr => [$($p:literal),* $(,)?]);* $(;)?) => {
        &[$($(Phrase { text: $p, cat: $cat, weight: $w, kind: $kind }),*),*]
    };
}

pub const PHRASES: &[Phrase] = phrases![
    RoleHijack 0.7 Kind::Plain => [
        "do anything now", "always intelligent and machiavellian", "developer mode output",
        "dan mode", "jailbreak prompt", "jailbroken ai", "unfiltered ai", "uncensored ai",
        "you have been jailbroken", "you are free now", "stan prompt", "anti-dan",
    ];
    RoleHijack 0.3 Kind::Plain => ["jailbroken", "jailbreak mode"];
    RoleHijack 0.45 Kind::Plain => [
        "unrestricted mode", "unfiltered mode", "uncensored mode", "no restrictions mode",
    ];
    InstructionOverride 0.45 Kind::Plain => [
        "system override", "admin override", "override mode", "priority override",
        "override all instructions", "new system prompt",
    ];
    DelimiterEscape 0.65 Kind::NeedsCue(0.45) => [
        "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|endoftext|>",
        "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[inst]",
        "[/inst]", "<<sys>>", "<</sys>>", "<|end|>", "<start_of_turn>", "<end_of_turn>",
        "<|im_sep|>",
    ];
    JailbreakFraming 0.75 Kind::Framing(0.15) => [
        "hypothetically", "hypothetical scenario", "purely hypothetical", "in a hypothetical",
        "for educational purposes", "for research purposes", "for academic purposes",
        "educational purposes only", "in a fictional world", "fictional story", "in a story",
        "write a story where", "write a story in which", "imagine a world", "in a movie script",
        "movie script", "screenplay", "as a thought experiment", "my grandma", "my grandmother",
        "my late grandmother", "my deceased grandmother", "grandma used to", "bedtime story",
        "opposite day", "alternate universe", "parallel universe", "no one will get hurt",
        "nobody will get hurt", "it's legal", "it is legal", "for my novel", "for a novel",
        "let's play a game", "lets play a game", "in this fictional", "roleplay", "role-play",
        "role play", "pretend you are", "pretend to be", "imagine you are",
    ];
    JailbreakFraming 0.75 Kind::Framing(0.2) => [
        "stay in character", "don't break character", "do not break character",
        "never break character", "remain in character", "stay in role", "break character",
    ];
];

fn ascii_bounded(p: &str) -> String {
    p.replace(r"\b", r"(?-u:\b)")
}

pub static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    REGEX_RULES
        .iter()
        .map(|d| Rule {
            cat: d.cat,
            weight: d.weight,
            kind: d.kind,
            re: Regex::new(&ascii_bounded(d.pattern))
                .unwrap_or_else(|e| panic!("bad injection rule {:?}: {e}", d.pattern)),
        })
        .collect()
});

/// All [`REGEX_RULES`] in one set: one pass tells which rules can match at all.
pub static RULE_SET: LazyLock<regex::RegexSet> = LazyLock::new(|| {
    regex::RegexSet::new(REGEX_RULES.iter().map(|d| ascii_bounded(d.pattern)))
        .expect("injection rule set")
});

pub static PHRASE_AC: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(PHRASES.iter().map(|p| p.text))
        .expect("phrase automaton")
});

fn re(p: &str) -> Regex {
    Regex::new(&ascii_bounded(p)).unwrap_or_else(|e| panic!("bad regex {p:?}: {e}"))
}

/// Injection cues that turn a delimiter into a delimiter *escape*.
pub static CUE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:ignore|disregard|forget|new\sinstructions?|you\sare\snow|you\smust|you\swill\snow|from\snow\son|system\s?:|assistant\s?:|admin\s?:|override|reveal|jailbreak|do\sanything\snow|system\sprompt|print|output|respond\sonly|developer\smode|execute|sudo|unrestricted|im_start|send|exfiltrate|generate\stwo|two\sresponses)\b|^\s?(?:system|assistant|developer)\b",
    )
});

/// Harmful request: a harmful object near a "how to / steps / recipe" request.
pub static HARM: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:bombs?(?:\s(?:shelters?|squads?|disposal|threats?|scares?|calorimeters?|cyclones?|dogs?|sniffing|proof))?|explosives?|napalm|meth|methamphetamine|nerve\sagents?|sarin|ricin|anthrax|bioweapons?|chemical\sweapons?|ransomware|keyloggers?|malware|pipe\sbombs?|molotov|thermite|fentanyl|untraceable\s(?:guns?|firearms?|poisons?)|ghost\sguns?|poison\s(?:someone|a\sperson|my)|kill\s(?:someone|a\sperson|people|my)|hotwire|hot-wire|launder(?:ing)?\smoney|money\slaundering|stolen\scredit\scards?|credit\scard\sfraud|phishing\s(?:emails?|kits?|pages?)|hack\sinto|break\sinto|steal\s(?:passwords|credentials|identities|someone's)|counterfeit|nuclear\sweapons?|dirty\sbomb|zero-?day\sexploits?|(?:activation|product|license)\skeys?|self-harm)\b",
    )
});
pub static HARM_REQUEST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:how\sto|how\sdo\s(?:i|you|we|one)|how\swould|steps?\s(?:to|for)|step[\s-]by[\s-]step|recipes?|instructions\s(?:for|on|to)|guide\s(?:to|for|on)|tutorial|ingredients|procedure|detailed|explain\show|tell\sme\show|teach\sme|walk\sme\sthrough|the\sprocess\sof|exact\s(?:steps|process|method)|read\sme|list\sof|working\s(?:code|script)|write\s(?:a\s|working\s|functional\s)*(?:code|script|program))\b",
    )
});

/// Negations that neutralise a [`Kind::Negatable`] rule when they occur just before it.
pub static NEGATION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:not|never|don't|dont|do\snot|avoid|without|no|nor|prevent|stop|must\snot|shouldn't|should\snot|won't|refuse\sto)\b",
    )
});

/// A hit followed by this refers to an artefact ("the previous instructions *in the ticket*"),
/// i.e. the speaker edits their own task rather than overriding the model.
pub static ARTEFACT_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^\s(?:in|from|of|on)\s(?:the|this|that|my|our|your)\s(?:[a-z]+\s)?(?:ticket|readme|doc|docs|document|email|file|spec|wiki|page|issue|pr|pull\srequest|comment|thread|guide|manual|section|chapter|step|slide|jira|confluence|chat|channel|script|repo|repository|template|form|notebook)\b",
    )
});

/// Reported speech right before a hit ("the tweet says: ..."): treated like quoting.
pub static REPORTED_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:says|said|wrote|writes|reads|tweeted|posted|replied|commented|stated|contains|containing)\s?:?\s?$",
    )
});

/// Placeholder or sensitive key in a URL query.
pub static SENSITIVE_QUERY: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"[{<\[$]|%7b|=[^&\s)]*(?:secret|password|passwd|token|api_?key|ssn|conversation|history|chat|prompt|credential|cookie|session)|\b(?:data|secret|key|token|password|pass|pwd|history|conversation|chat|prompt|q|msg|message|info|content|memory|email|ssn|creds?|cookie|session|exfil|leak|payload|d|text|summary)=",
    )
});

/// Meta cues *before* a hit, in the same sentence: the text talks about the phrase.
pub static META_BEFORE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:what\sis|what's|what\sare|what\sdoes|explain|explaining|describe|define|definition|detects?|detecting|detection|detector|classif(?:y|ier|ies|ication)|defend|defending|defen[cs]es?|protect(?:ing)?\s(?:against|from)|mitigat(?:e|ing|ion)|prevent(?:ing|s)?|guard(?:ing)?\sagainst|blocks?|blocking|filters?|filtering|flags?|flagging|sanitiz\w*|sanitis\w*|example\sof|examples\sof|e\.g\.|such\sas|phrases?\slike|the\sphrase|the\sstring|strings?\slike|tests?\s(?:that|whether|if)|unit\stests?|test\scases?|regex|keywords?|attacks?\slike|attackers?|known\sas|called|paper|article|research|security|red[\s-]team\w*|owasp|resist\w*|robust\w*|vulnerab\w*|susceptible|why\sdo|how\sdo|how\sdoes|how\scan|what\sdo|refus\w*|users?\s(?:types?|typed|says?|writes?|enters?|sends?|submits?)|when\s(?:a\s|the\s)?users?|guard\w*|how\sshould|what\shappens|recogni[sz]e|identify|rejects?|warns?|injections?|jailbreaks?|mentions?|contains?|quotes?|quoting|literal|payloads?)\b",
    )
});

/// Meta cues right *after* a hit: "'ignore previous instructions' attacks".
pub static META_AFTER: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:attacks?|attempts?|injections?|jailbreaks?|payloads?|exploits?|tricks?|techniques?|style|phrases?|strings?|patterns?|tokens?|means?|meaning|syntax|is\sa\s(?:classic|common|known|typical))\b",
    )
});

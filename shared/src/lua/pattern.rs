//! How long Lua's pattern matcher could run on a subject, before it runs (spec §6): the sandbox's
//! `string.find`, `match`, `gmatch` and `gsub` refuse a call whose worst-case backtracking could
//! keep C busy far longer than the CPU-time hook, which only runs between VM instructions, could
//! notice.

/// The largest worst-case cost, in [`pattern_refusal`]'s units, of a pattern call the sandbox
/// allows: about 0.15 s of C (measured: one backtracking quantifier over 4.4 KB of spaces,
/// `s:find("%s*x")`, takes 0.12 s; a linear pattern over 16 MB, 0.17 s). So one allowed call
/// overruns the budget by little, and as each guarded call checks the budget, a loop of them is
/// stopped as promptly as `while true do end`. `(%w+)=(%w+)` over 1 KB costs 10^6.
pub(crate) const MAX_PATTERN_COST: u128 = 20_000_000;

/// Why a call of a pattern function on `subject` with `pattern` could outlast any CPU budget, if
/// it could; `None` for calls the sandbox allows.
///
/// Lua's matcher (lstrlib.c) is a backtracking search: each quantified single-character class
/// (`*`, `+`, `-`, `?` after a class, not escaped by `%` nor inside a `[...]` set) may try every
/// length the subject leaves it, and the search starts again at each subject position, so q such
/// quantifiers cost at worst about len(subject)^(q + 1) steps. A quantifier that ends the pattern
/// (captures closing aside) is not counted: once the matcher reaches it, the rest is empty and
/// the first length it tries succeeds, so it adds a linear scan, not a factor. `%b`, `%f`, and
/// back-references are linear at each position and are not counted either. The estimate
/// saturates; a call above [`MAX_PATTERN_COST`] is refused.
pub(crate) fn pattern_refusal(subject: &[u8], pattern: &[u8]) -> Option<String> {
    let quantifiers = backtracking_quantifiers(pattern);
    let n = subject.len() as u128;
    let cost = n.saturating_pow(quantifiers.saturating_add(1));
    (cost > MAX_PATTERN_COST).then(|| {
        format!(
            "pattern too complex for the sandbox: {quantifiers} quantifiers over a subject of {} bytes",
            subject.len()
        )
    })
}

/// What one element of a pattern is, for [`backtracking_quantifiers`].
#[derive(Clone, Copy, PartialEq)]
enum Item {
    /// A single-character class with a quantifier.
    Quantified,
    /// A capture's `(` or `)`: matching them never fails.
    Capture,
    /// Anything else: a class without quantifier, `%b`, `%f`, a back-reference, a final `$`.
    Other,
}

/// The quantifiers of a Lua pattern that can make the matcher backtrack, read the way lstrlib.c's
/// `do_match` reads a pattern. A malformed pattern is read as far as it goes; Lua refuses it.
fn backtracking_quantifiers(pattern: &[u8]) -> u32 {
    let p = pattern;
    let mut items = Vec::new();
    let mut i = usize::from(p.first() == Some(&b'^'));
    while i < p.len() {
        match (p[i], p.get(i + 1)) {
            (b'(' | b')', _) => {
                items.push(Item::Capture);
                i += 1;
            }
            (b'$', None) => {
                items.push(Item::Other);
                i += 1;
            }
            (b'%', Some(b'b')) => {
                items.push(Item::Other);
                i += 4;
            }
            (b'%', Some(b'f')) => {
                items.push(Item::Other);
                i = class_end(p, i + 2);
            }
            (b'%', Some(d)) if d.is_ascii_digit() => {
                items.push(Item::Other);
                i += 2;
            }
            _ => {
                let end = class_end(p, i);
                if matches!(p.get(end), Some(b'*' | b'+' | b'-' | b'?')) {
                    items.push(Item::Quantified);
                    i = end + 1;
                } else {
                    items.push(Item::Other);
                    i = end;
                }
            }
        }
    }
    let mut count = items
        .iter()
        .filter(|&&item| item == Item::Quantified)
        .count();
    if items.iter().rev().find(|&&item| item != Item::Capture) == Some(&Item::Quantified) {
        count -= 1;
    }
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Where the single-character class starting at `i` ends, as lstrlib.c's `classEnd`: `%x` is two
/// bytes; a set runs to the first `]` after its first member (so `[]]` and `[^]]` hold `]`, and
/// `-` there is a member or a range, never a quantifier), `%` escaping inside it.
fn class_end(p: &[u8], mut i: usize) -> usize {
    let first = p.get(i).copied();
    i += 1;
    match first {
        Some(b'%') => i + 1,
        Some(b'[') => {
            if p.get(i) == Some(&b'^') {
                i += 1;
            }
            loop {
                let Some(&c) = p.get(i) else { return p.len() };
                i += 1;
                if c == b'%' && i < p.len() {
                    i += 1;
                }
                if p.get(i) == Some(&b']') {
                    return i + 1;
                }
            }
        }
        _ => i,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_quantifiers_that_can_backtrack() {
        for (pattern, count) in [
            ("a*b", 1),
            ("a*", 0),
            ("^a*", 0),
            ("a-b", 1),
            ("a*()", 0),
            ("(a*)", 0),
            ("a*$", 1),
            ("(%w+)=(%w+)", 1),
            ("%s+", 0),
            ("%*x", 0),
            ("[a-z]+x", 1),
            ("[-*+?]x", 0),
            ("[]*]x", 0),
            ("[^]-]x", 0),
            ("[%]*]+x", 1),
            ("%b()*x", 0),
            ("%f[%w]%w+", 0),
            ("(a)%1*x", 0),
            (".?.?x", 2),
        ] {
            assert_eq!(
                backtracking_quantifiers(pattern.as_bytes()),
                count,
                "{pattern}"
            );
        }
        assert_eq!(
            backtracking_quantifiers("a*".repeat(40).as_bytes()),
            39,
            "the last one ends the pattern"
        );
    }
}

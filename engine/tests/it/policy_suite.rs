//! The velro store's test suite: it passes, it has teeth (mutation testing), and the inheritance
//! depth lives in the policy text.

use std::str::FromStr;

use cedar_policy::{Context, Entities, EntityUid, Request};
use velro_engine::PolicyStore;
use velro_engine::policy_store::{PolicyEffect, StoreSources};
use velro_engine::policy_test::TestSuite;

use crate::{copy_store, velro_dir};

#[test]
fn the_velro_suite_passes_and_covers_the_matrix() {
    let store = PolicyStore::load(&velro_dir()).unwrap();
    assert!(store.warnings().is_empty(), "{:?}", store.warnings());
    let suite = TestSuite::for_store(&velro_dir(), &store).unwrap();
    let report = suite.run(&store);
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(report.passed() >= 2000, "only {} cases", report.passed());
}

#[test]
fn every_policy_has_an_id_and_a_reason() {
    let store = PolicyStore::load(&velro_dir()).unwrap();
    assert_eq!(
        store.policy_info().count(),
        store.policies().policies().count()
    );
    for info in store.policy_info() {
        assert!(!info.reason.trim().is_empty(), "{}", info.id);
        let file = store
            .sources()
            .policies
            .iter()
            .find(|f| f.name == info.file)
            .unwrap();
        assert!(
            file.text[info.span.clone()].starts_with("@id("),
            "{}",
            info.id
        );
    }
}

/// One change to the store's policy text.
struct Mutant {
    description: String,
    sources: StoreSources,
}

/// Text mutations of one policy: delete it; flip a comparison's boundary or sense; drop one
/// element of a list literal; drop one operand of a `&&` or `||` chain.
fn mutants(store: &PolicyStore) -> Vec<Mutant> {
    let sources = store.sources();
    let mut out = Vec::new();
    for info in store.policy_info() {
        let file_index = sources
            .policies
            .iter()
            .position(|f| f.name == info.file)
            .unwrap();
        let file_text = &sources.policies[file_index].text;
        let text = &file_text[info.span.clone()];
        let mut variants: Vec<(String, String)> = vec![("deleted".into(), String::new())];
        variants.extend(comparison_mutants(text));
        variants.extend(list_mutants(text));
        variants.extend(chain_mutants(text, "&&"));
        variants.extend(chain_mutants(text, "||"));
        for (what, replacement) in variants {
            let mut mutated = sources.clone();
            let mut new_text = file_text.clone();
            new_text.replace_range(info.span.clone(), &replacement);
            mutated.policies[file_index].text = new_text;
            out.push(Mutant {
                description: format!("{} ({:?}): {what}", info.id, info.effect),
                sources: mutated,
            });
        }
    }
    out
}

/// Byte ranges of `text` outside string literals.
fn code_positions(text: &str) -> Vec<bool> {
    let mut in_string = false;
    let mut escaped = false;
    text.bytes()
        .map(|b| {
            let code = !in_string && b != b'"';
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else if b == b'"' {
                in_string = true;
            }
            code
        })
        .collect()
}

/// Start of the policy's condition (after the scope), so scopes are mutated only via lists.
fn body_start(text: &str) -> usize {
    ["when", "unless"]
        .iter()
        .filter_map(|k| text.find(k))
        .min()
        .unwrap_or(text.len())
}

fn comparison_mutants(text: &str) -> Vec<(String, String)> {
    let code = code_positions(text);
    let swaps = [("<=", "<"), (">=", ">"), ("==", "!="), ("!=", "==")];
    let mut out = Vec::new();
    for (from, to) in swaps {
        for (i, _) in text.match_indices(from) {
            if i >= body_start(text) && code[i] {
                let mut t = text.to_owned();
                t.replace_range(i..i + from.len(), to);
                out.push((format!("`{from}` at {i} -> `{to}`"), t));
            }
        }
    }
    out
}

/// Top-level items of the bracketed/parenthesized group opening at `open`, as byte ranges, and
/// the index of its closing bracket.
fn group_items(
    text: &str,
    code: &[bool],
    open: usize,
    sep: &str,
) -> Option<(Vec<(usize, usize)>, usize)> {
    let bytes = text.as_bytes();
    let (o, c) = (bytes[open], if bytes[open] == b'[' { b']' } else { b')' });
    let _ = o;
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = open + 1;
    let mut i = open + 1;
    while i < bytes.len() {
        if code[i] {
            match bytes[i] {
                b'[' | b'(' | b'{' => depth += 1,
                b']' | b')' | b'}' if depth > 0 => depth -= 1,
                b if b == c && depth == 0 => {
                    items.push((start, i));
                    return Some((items, i));
                }
                _ if depth == 0 && text[i..].starts_with(sep) => {
                    items.push((start, i));
                    start = i + sep.len();
                    i += sep.len();
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    None
}

fn list_mutants(text: &str) -> Vec<(String, String)> {
    let code = code_positions(text);
    let mut out = Vec::new();
    for (open, _) in text.match_indices('[') {
        if !code[open] {
            continue;
        }
        let Some((items, close)) = group_items(text, &code, open, ",") else {
            continue;
        };
        if items.len() < 2 {
            continue;
        }
        for skip in 0..items.len() {
            let kept: Vec<&str> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, (s, e))| text[*s..*e].trim())
                .collect();
            let mut t = text.to_owned();
            t.replace_range(open..=close, &format!("[{}]", kept.join(", ")));
            out.push((
                format!(
                    "list at {open} without `{}`",
                    text[items[skip].0..items[skip].1].trim()
                ),
                t,
            ));
        }
    }
    out
}

/// Drop one operand of every `sep` chain: the condition body `{ … }` and every `( … )` group.
fn chain_mutants(text: &str, sep: &str) -> Vec<(String, String)> {
    let code = code_positions(text);
    let mut out = Vec::new();
    let body = body_start(text);
    let opens = text
        .char_indices()
        .filter(|(i, c)| *i > body && code[*i] && (*c == '(' || *c == '{'))
        .map(|(i, _)| i);
    for open in opens {
        // Treat `{ … }` like a parenthesized group.
        let mut as_paren = text.to_owned();
        if text.as_bytes()[open] == b'{' {
            let close = text[open..].rfind('}').map(|c| c + open).unwrap();
            as_paren.replace_range(open..=open, "(");
            as_paren.replace_range(close..=close, ")");
        }
        let Some((items, close)) = group_items(&as_paren, &code, open, sep) else {
            continue;
        };
        if items.len() < 2 {
            continue;
        }
        for skip in 0..items.len() {
            let kept: Vec<&str> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, (s, e))| text[*s..*e].trim())
                .collect();
            let mut t = text.to_owned();
            t.replace_range(
                open + 1..close,
                &format!(" {} ", kept.join(&format!(" {sep} "))),
            );
            out.push((
                format!(
                    "`{sep}` chain at {open} without `{}`",
                    text[items[skip].0..items[skip].1].trim()
                ),
                t,
            ));
        }
    }
    out
}

#[test]
fn the_velro_suite_kills_every_mutant_of_every_policy() {
    let store = PolicyStore::load(&velro_dir()).unwrap();
    let suite = TestSuite::for_store(&velro_dir(), &store).unwrap();
    let mutants = mutants(&store);
    let deletions = mutants
        .iter()
        .filter(|m| m.description.ends_with("deleted"))
        .count();
    assert_eq!(deletions, store.policy_info().count());
    assert!(mutants.len() > 3 * deletions, "{} mutants", mutants.len());

    // Mutants run on two threads; each thread moves the case that killed a mutant to the front,
    // since mutants of the same policy tend to die on the same case.
    let (survivors, invalid) = std::thread::scope(|scope| {
        let workers: Vec<_> = mutants
            .chunks(mutants.len().div_ceil(2))
            .map(|chunk| {
                let (suite, store) = (&suite, &store);
                scope.spawn(move || {
                    let mut order: Vec<usize> = (0..suite.len()).collect();
                    let mut survivors = Vec::new();
                    let mut invalid = 0;
                    for mutant in chunk {
                        let Ok(mutated) = store.rebuild(mutant.sources.clone()) else {
                            // The mutation does not validate (e.g. an optional attribute read
                            // without `has`): such a store can never load, nothing to catch.
                            invalid += 1;
                            continue;
                        };
                        match suite.first_failure(&mutated, order.iter().copied()) {
                            Some(killer) => {
                                if let Some(pos) = order.iter().position(|&i| i == killer) {
                                    order.remove(pos);
                                    order.insert(0, killer);
                                }
                            }
                            None => survivors.push(mutant.description.clone()),
                        }
                    }
                    (survivors, invalid)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).fold(
            (Vec::new(), 0),
            |(mut s, i), (s2, i2)| {
                s.extend(s2);
                (s, i + i2)
            },
        )
    });
    assert!(
        survivors.is_empty(),
        "{} of {} mutants ({} invalid) survive the velro suite:\n{}",
        survivors.len(),
        mutants.len(),
        invalid,
        survivors.join("\n")
    );
    // Deleting a forbid is the strongest weakening; all of them are among the killed.
    assert!(
        store
            .policy_info()
            .any(|p| p.effect == PolicyEffect::Forbid)
    );
}

fn check(
    store: &PolicyStore,
    entities: &Entities,
    principal: &str,
    action: &str,
    resource: &str,
) -> bool {
    let context = Context::from_json_value(
        serde_json::json!({"emergency": {"enabled": false, "justification": "", "justification_length": 0}}),
        None,
    )
    .unwrap();
    let request = Request::new(
        EntityUid::from_str(principal).unwrap(),
        EntityUid::from_str(action).unwrap(),
        EntityUid::from_str(resource).unwrap(),
        context,
        Some(store.schema()),
    )
    .unwrap();
    store.authorize(&request, entities).allowed
}

/// DESIGN §4: changing the inheritance depth from 3 to 2 is a policy edit, not a Rust change.
#[test]
fn lowering_the_depth_is_a_policy_edit() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("velro");
    copy_store(&velro_dir(), &store_dir);

    let before = PolicyStore::load(&store_dir).unwrap();
    let entities = inheritance_entities(&before);

    let depth3_sub_project = (
        "Velro::User::\"a3\"",
        "Velro::Action::\"project:share\"",
        "Velro::Project::\"L4\"",
    );
    let depth3_lineage = (
        "Velro::User::\"u1\"",
        "Velro::Action::\"generation:view\"",
        "Velro::Generation::\"G4\"",
    );
    let depth2_lineage = (
        "Velro::User::\"u2\"",
        "Velro::Action::\"generation:view\"",
        "Velro::Generation::\"G4\"",
    );
    for (p, a, r) in [depth3_sub_project, depth3_lineage, depth2_lineage] {
        assert!(
            check(&before, &entities, p, a, r),
            "{p} {a} {r} before the edit"
        );
    }

    // The edit: delete every policy whose id ends in `.depth3` from inheritance.cedar.
    let path = store_dir.join("inheritance.cedar");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let mut spans: Vec<_> = before
        .policy_info()
        .filter(|p| p.id.ends_with(".depth3"))
        .map(|p| p.span.clone())
        .collect();
    assert_eq!(spans.len(), 5, "four link levels and lineage");
    spans.sort_by_key(|s| std::cmp::Reverse(s.start));
    for span in spans {
        text.replace_range(span, "");
    }
    std::fs::write(&path, text).unwrap();

    let after = PolicyStore::load(&store_dir).unwrap();
    assert_ne!(before.version(), after.version());
    for (p, a, r) in [depth3_sub_project, depth3_lineage] {
        assert!(
            !check(&after, &entities, p, a, r),
            "{p} {a} {r} after the edit"
        );
    }
    assert!(check(
        &after,
        &entities,
        depth2_lineage.0,
        depth2_lineage.1,
        depth2_lineage.2
    ));
}

/// The inheritance fixture world, reused from the store's own tests.
fn inheritance_entities(store: &PolicyStore) -> Entities {
    let suite_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        velro_dir().join("tests/inheritance.yaml"),
        suite_dir.path().join("inheritance.yaml"),
    )
    .unwrap();
    TestSuite::load(suite_dir.path(), store.schema())
        .unwrap()
        .entities()
        .next()
        .unwrap()
        .clone()
}

//! Every structural problem of a rulebook at once. The YAML deserializer stops at the first
//! problem; to find the next, the part that holds it is set aside and the text parsed again:
//! an unknown key (with the lines nested under it), a key whose value is of the wrong kind in
//! a `windows:` entry or an `approval:` block (that item is then left out of the rest), or else
//! the whole list item (a source or a rule) it sits in. Set-aside lines become empty lines, so every later problem keeps its line
//! and column. Items set aside are never reported again, so one mistake is not reported twice.
//! Once the rest parses, it is returned too, so the checks after parsing (conditions,
//! templates, the sources a rule names) can look at the sources and rules that were not set
//! aside.

/// A problem the parser found: line, column (1-based) and the message as shown to people.
pub type Found = (u64, u64, String);

/// The most problems looked for in one file.
const MAX: usize = 50;

/// One list item of a top-level section (`sources:` / `rules:`): its lines `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct Item {
    section: usize,
    start: usize,
    end: usize,
}

/// What [`every_problem`] found in a text.
#[derive(Debug)]
pub struct Recovered {
    /// Every problem, in line order.
    pub problems: Vec<Found>,
    /// The text with every part holding a problem set aside (emptied lines, so positions
    /// stay true), when what is left parses; `None` when the search stopped before that (too
    /// many problems, or one that could not be set aside).
    pub rest: Option<String>,
}

/// Every problem `parse` finds in `text`, in line order; `parse` answers the first problem of
/// the text it is given (the text with the parts already reported set aside).
pub fn every_problem(text: &str, parse: impl Fn(&str) -> Option<Found>) -> Recovered {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let items = outline(&lines);
    let mut found: Vec<Found> = Vec::new();
    let mut left: Vec<bool> = vec![true; items.len()];
    // Items with a key set aside for a wrong value (left out of the rest).
    let mut partial: Vec<bool> = vec![false; items.len()];
    // Per item, the keys an unknown key there was taken for (`did you mean `actions`?`).
    let mut meant: Vec<(usize, String)> = Vec::new();
    let mut rest = None;
    while found.len() < MAX {
        let current = lines.join("\n");
        let Some(problem) = parse(&current) else {
            rest = Some(current);
            break;
        };
        if found.contains(&problem) {
            break; // no progress
        }
        let at = (problem.0 as usize).saturating_sub(1);
        let unknown_key = problem.2.starts_with("unknown key");
        let item_at = items.iter().position(|i| (i.start..i.end).contains(&at));
        // `actions` missing right after `actoins` was set aside: the same mistake.
        let echo = item_at.is_some_and(|k| {
            meant.iter().any(|(i, key)| {
                *i == k
                    && problem
                        .2
                        .starts_with(&format!("`{key}` is required and missing"))
            })
        });
        if let (Some(k), Some(key)) = (item_at, suggestion(&problem.2)) {
            meant.push((k, key.to_string()));
        }
        if !echo {
            found.push(problem.clone());
        }
        let Some(k) = item_at else {
            // Outside every item: a top-level key of its own can be set aside.
            if unknown_key && indent(&lines[at.min(lines.len().saturating_sub(1))]) == 0 {
                let end = lines.len();
                blank_block(&mut lines, at, end);
                continue;
            }
            break;
        };
        let item = items[k];
        let line = lines.get(at).map(String::as_str).unwrap_or("");
        // Only a key that is its line's own, and not its mapping's last, is set aside alone:
        // one inside a flow mapping (`actions: [{log: {mesage: hi}}]`) would take the keys
        // before it on its line along, and a mapping left empty (`log:` over `mesage: hi`)
        // would be reported as having no value. Either is a problem the user did not make.
        if unknown_key
            && !echo
            && at > item.start
            && !line.trim_start().starts_with('-')
            && problem.1 as usize == indent(line) + 1
            && !empties_parent(&lines, at, item.end)
        {
            blank_block(&mut lines, at, item.end);
            continue;
        }
        // An entry of a list inside the item (an action, a condition of `all:`) that has
        // other entries: set it aside alone, so a mistake in one action does not hide those
        // of the others.
        if !echo && let Some(entry) = nested_entry(&lines, at, item) {
            blank_block(&mut lines, entry, item.end);
            continue;
        }
        // A value of the wrong type on a key's own line in a `windows:` entry or an
        // `approval:` block (`rules: r`, `approvers: anna`): that key is set aside alone, so
        // the block's next problem is found too. A later "`rules` is required" is the same
        // mistake; and the item is left out of the rest, which would compile it without the
        // key and say that it lacks it.
        if !unknown_key
            && !echo
            && let Some(key) = wrong_value(&lines, at, problem.1, item)
            && !empties_parent(&lines, at, item.end)
        {
            meant.push((k, key));
            partial[k] = true;
            blank_block(&mut lines, at, item.end);
            continue;
        }
        // The whole item: one problem reported per source or rule at least.
        set_aside(&mut lines, &items, &mut left, k);
    }
    if rest.is_some() && partial.iter().any(|&p| p) {
        for (k, _) in partial.iter().enumerate().filter(|(_, p)| **p) {
            if left[k] {
                set_aside(&mut lines, &items, &mut left, k);
            }
        }
        rest = Some(lines.join("\n"));
    }
    found.sort();
    Recovered {
        problems: found,
        rest,
    }
}

/// Empties item `k`'s lines; a section left with no item becomes `key: []` (with nothing under
/// it, it would be a problem of its own).
fn set_aside(lines: &mut [String], items: &[Item], left: &mut [bool], k: usize) {
    let item = items[k];
    for l in &mut lines[item.start..item.end] {
        l.clear();
    }
    left[k] = false;
    let section = item.section;
    let empty = items
        .iter()
        .zip(left.iter())
        .all(|(i, &l)| i.section != section || !l);
    if empty {
        let key = lines[section].trim_end().to_string();
        lines[section] = format!("{key} []");
    }
}

/// The key of line `at` when the problem at `column` is in its value (`approvers: anna`) and
/// the line is in a `windows:` entry or inside an `approval:` block of `item`: the blocks whose
/// keys are set aside one by one for such a problem.
fn wrong_value(lines: &[String], at: usize, column: u64, item: Item) -> Option<String> {
    let line = lines.get(at)?;
    let own = indent(line);
    let t = line.trim_start();
    if at <= item.start || t.starts_with('-') || t.starts_with('#') {
        return None;
    }
    let (key, value) = t.split_once(':')?;
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let value = value.split(" #").next().unwrap_or("").trim();
    if !plain || value.is_empty() || (column as usize) <= own + key.len() + 1 {
        return None;
    }
    let windows = lines
        .get(item.section)
        .is_some_and(|l| l.trim_end().trim_end_matches(" []") == "windows:");
    // An ancestor of the line inside the item (a line above it, less indented) is `approval:`.
    let mut floor = own;
    let approval = (item.start + 1..at).rev().any(|j| {
        let l = &lines[j];
        if l.trim().is_empty() || l.trim_start().starts_with('#') || indent(l) >= floor {
            return false;
        }
        floor = indent(l);
        l.split(" #").next().unwrap_or("").trim() == "approval:"
    });
    (windows || approval).then(|| key.to_string())
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The key an unknown-key message proposes (`did you mean `condition`?`).
fn suggestion(message: &str) -> Option<&str> {
    if !message.starts_with("unknown key") {
        return None;
    }
    let from = message.find("did you mean `")? + "did you mean `".len();
    let len = message[from..].find('`')?;
    Some(&message[from..from + len])
}

/// Whether setting aside the key at line `at` (and what is nested under it) would leave the
/// block mapping it belongs to (`log:` on the line above) with nothing in it.
fn empties_parent(lines: &[String], at: usize, end: usize) -> bool {
    let own = indent(&lines[at]);
    let blank = |l: &String| l.trim().is_empty() || l.trim_start().starts_with('#');
    let Some(parent) = (0..at)
        .rev()
        .find(|&j| !blank(&lines[j]) && indent(&lines[j]) < own)
    else {
        return false;
    };
    let head = lines[parent].split(" #").next().unwrap_or("").trim_end();
    if !head.ends_with(':') {
        return false; // `- name: r`: the mapping has a key on the parent's line
    }
    let siblings = (parent + 1..end.min(lines.len()))
        .take_while(|&j| blank(&lines[j]) || indent(&lines[j]) > indent(&lines[parent]))
        .filter(|&j| j != at && !blank(&lines[j]) && indent(&lines[j]) == own)
        .count();
    siblings == 0
}

/// The line of the innermost block-list entry (`- log: …`) inside `item` that holds line `at`,
/// when its list has another entry left: setting it aside leaves a list, never an empty one
/// (which would be a problem the user did not make).
fn nested_entry(lines: &[String], at: usize, item: Item) -> Option<usize> {
    let blank = |l: &String| l.trim().is_empty() || l.trim_start().starts_with('#');
    let dash = |l: &String| l.trim_start().starts_with('-');
    let mut floor = usize::MAX; // the least indent seen between the entry and `at`
    for j in (item.start + 1..=at.min(item.end.saturating_sub(1))).rev() {
        let l = &lines[j];
        if blank(l) {
            continue;
        }
        let own = indent(l);
        if dash(l) && (j == at || own < floor) {
            let sibling = |range: &mut dyn Iterator<Item = usize>| {
                for k in range {
                    let other = &lines[k];
                    if blank(other) || indent(other) > own {
                        continue;
                    }
                    return indent(other) == own && dash(other);
                }
                false
            };
            let after = (j + 1..item.end).find(|&k| !blank(&lines[k]) && indent(&lines[k]) <= own);
            let before = sibling(&mut (item.start + 1..j).rev());
            let next = after.is_some_and(|k| sibling(&mut (k..item.end)));
            return (before || next).then_some(j);
        }
        floor = floor.min(own);
    }
    None
}

/// Empties line `at` and the lines after it nested deeper, up to `end`.
fn blank_block(lines: &mut [String], at: usize, end: usize) {
    let Some(first) = lines.get(at) else { return };
    let base = indent(first);
    lines[at].clear();
    for l in lines.iter_mut().take(end).skip(at + 1) {
        if l.trim().is_empty() || l.trim_start().starts_with('#') || indent(l) > base {
            l.clear();
        } else {
            break;
        }
    }
}

/// The items of the top-level keys whose value is a block list (`section`: the key's line,
/// 0-based).
fn outline(lines: &[String]) -> Vec<Item> {
    let mut sections = Vec::new();
    let mut items = Vec::new();
    let top = |l: &str| indent(l) == 0 && !l.trim().is_empty() && !l.starts_with('#');
    let mut i = 0;
    while i < lines.len() {
        let l = &lines[i];
        let block_key = top(l) && {
            let t = l.split(" #").next().unwrap_or("").trim_end();
            t.ends_with(':') && !t.starts_with('-')
        };
        if !block_key {
            i += 1;
            continue;
        }
        let end = (i + 1..lines.len())
            .find(|&j| top(&lines[j]))
            .unwrap_or(lines.len());
        let dash = (i + 1..end).find(|&j| lines[j].trim_start().starts_with('-'));
        if let Some(first) = dash {
            let at = indent(&lines[first]);
            let s = sections.len();
            sections.push(i);
            let starts: Vec<usize> = (first..end)
                .filter(|&j| indent(&lines[j]) == at && lines[j].trim_start().starts_with('-'))
                .collect();
            for (n, &start) in starts.iter().enumerate() {
                let stop = starts.get(n + 1).copied().unwrap_or(end);
                items.push(Item {
                    section: s,
                    start,
                    end: stop,
                });
            }
        }
        i = end;
    }
    // `section` indexes `sections`; the caller wants line numbers.
    items
        .into_iter()
        .map(|it| Item {
            section: sections[it.section],
            ..it
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy parser: the first line holding `bad` is a problem ("unknown key" when it is a
    /// key of its own), and a list key with nothing under it is one too.
    fn toy(text: &str) -> Option<Found> {
        for (i, l) in text.lines().enumerate() {
            if l.contains("bad") {
                let kind = if l.trim_start().starts_with('-') {
                    "bad item"
                } else {
                    "unknown key `bad`"
                };
                let column = l.find("bad").map_or(1, |c| c as u64 + 1);
                return Some((i as u64 + 1, column, kind.to_string()));
            }
            if l.trim_end() == "rules:" && text.lines().nth(i + 1).is_none_or(|n| n.is_empty()) {
                return Some((i as u64 + 1, 1, "empty rules".into()));
            }
        }
        None
    }

    #[test]
    fn each_problem_is_found_once_at_its_line() {
        let text = "sources:\n  - name: s\n    bad: 1\nrules:\n  - name: a\n    bad: 2\n    bad: 3\n  - bad item\n    more: x\n  - name: ok\n";
        let found = every_problem(text, toy).problems;
        let lines: Vec<u64> = found.iter().map(|f| f.0).collect();
        assert_eq!(lines, vec![3, 6, 7, 8], "{found:?}");
        // The last item of a list set aside leaves `rules: []`, not a new problem.
        let found = every_problem("rules:\n  - bad item\n", toy).problems;
        assert_eq!(found.len(), 1, "{found:?}");
    }

    /// What is left once every problem is set aside is returned, line for line, for the
    /// checks after parsing; nothing is when the search gave up.
    #[test]
    fn the_rest_of_the_text_is_returned_with_its_lines_kept() {
        let text = "rules:\n  - name: a\n    bad: 1\n    x: 1\n  - bad item\n  - name: ok\n";
        let found = every_problem(text, toy);
        let rest = found.rest.clone().unwrap_or_default();
        assert_eq!(
            rest, "rules:\n  - name: a\n\n    x: 1\n\n  - name: ok",
            "{found:?}"
        );
        // A problem outside every item that cannot be set aside: no rest.
        let found = every_problem("  bad\nrules:\n  - name: ok\n", toy);
        assert_eq!(found.problems.len(), 1);
        assert!(found.rest.is_none(), "{found:?}");
    }

    /// A problem in one entry of a list inside a rule (an action) is set aside with that entry
    /// alone, so the next action's problem is found too; the list's last entry left takes the
    /// whole rule along (an empty `actions:` would be a problem of its own).
    #[test]
    fn each_action_of_a_rule_is_looked_at() {
        let text = "rules:\n  - name: a\n    actions:\n      - log: {bad: 1}\n      - run:\n          bad: 2\n      - log: {x: 1}\n  - name: b\n    actions:\n    - log: {bad: 3}\n    - log: {bad: 4}\n";
        let lines: Vec<u64> = every_problem(text, toy)
            .problems
            .iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(lines, vec![4, 6, 10, 11]);
        let text = "rules:\n  - name: b\n  - name: a\n    actions:\n      - log: {bad: 1}\n";
        assert_eq!(every_problem(text, toy).problems.len(), 1);
    }
}

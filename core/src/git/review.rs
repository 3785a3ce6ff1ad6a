//! A plan as a pull-request comment (`meshvm gitops diff --output markdown`): counts per
//! group, removals first, the changes that make running VMs re-join the mesh at the top,
//! per-VM diffs folded, split into numbered parts that each fit a comment. Pure: the plan (with
//! its unified diff) in, Markdown text out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::plan::{Plan, VmRef};
use crate::render::layout::{BOOTSTRAP_DIR, vm_of_path};

/// GitHub's limit on a comment's body, in characters.
pub const COMMENT_BUDGET: usize = 65_536;

/// The marker line a CI job finds its comment by: one per fleet path and part.
pub fn marker(path: &str, part: usize) -> String {
    if part == 1 {
        format!("<!-- meshvm-diff: {path} -->")
    } else {
        format!("<!-- meshvm-diff: {path} part {part} -->")
    }
}

/// Why a running VM re-joins the mesh: its bootstrap files change what its sidecar trusts or
/// where it gets its certificate, so it must be given new files (new user-data) and restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejoin {
    RootCertificate,
    Revision,
    CaAddress,
    MeshId,
    TrustDomain,
    ClusterId,
}

impl Rejoin {
    fn label(self) -> &'static str {
        match self {
            Rejoin::RootCertificate => "root certificate",
            Rejoin::Revision => "istiod revision",
            Rejoin::CaAddress => "CA address",
            Rejoin::MeshId => "mesh ID",
            Rejoin::TrustDomain => "trust domain",
            Rejoin::ClusterId => "cluster ID",
        }
    }
}

/// One file's part of a unified diff.
struct FileDiff<'a> {
    path: &'a str,
    text: &'a str,
}

/// Splits a unified diff (`diff --git a/P b/P` sections) by file.
fn split_diff(diff: &str) -> Vec<FileDiff<'_>> {
    let mut starts: Vec<usize> = diff
        .match_indices("diff --git a/")
        .filter(|(i, _)| *i == 0 || diff.as_bytes()[i - 1] == b'\n')
        .map(|(i, _)| i)
        .collect();
    starts.push(diff.len());
    starts
        .windows(2)
        .map(|w| {
            let text = &diff[w[0]..w[1]];
            let header = text.lines().next().unwrap_or_default();
            let path = header
                .strip_prefix("diff --git a/")
                .and_then(|rest| rest.split_once(" b/"))
                .map_or("", |(a, _)| a);
            FileDiff { path, text }
        })
        .collect()
}

/// The value of `KEY='…'` on a diff line of cluster.env (`-` old, `+` new).
fn env_changes<'a>(text: &'a str, key: &str) -> (Option<&'a str>, Option<&'a str>) {
    let value = |line: &'a str, sign: char| {
        line.strip_prefix(sign)
            .and_then(|l| l.strip_prefix(key))
            .and_then(|l| l.strip_prefix('='))
            .map(|v| v.trim_matches('\''))
    };
    let old = text.lines().find_map(|l| value(l, '-'));
    let new = text.lines().find_map(|l| value(l, '+'));
    (old, new)
}

/// What in a VM's bootstrap file diff makes the running VM re-join.
fn rejoins(file: &str, text: &str) -> BTreeSet<Rejoin> {
    let mut out = BTreeSet::new();
    match file {
        "root-cert.pem" => {
            out.insert(Rejoin::RootCertificate);
        }
        "cluster.env" => {
            if let (Some(old), Some(new)) = env_changes(text, "CA_ADDR") {
                // The revision shows as the istiod service's name: istiod-<rev>.<ns>.svc.
                let service = |a: &str| a.split(['.', ':']).next().unwrap_or_default().to_owned();
                if old != new {
                    let (o, n) = (service(old), service(new));
                    if o != n && o.starts_with("istiod") && n.starts_with("istiod") {
                        out.insert(Rejoin::Revision);
                    } else {
                        out.insert(Rejoin::CaAddress);
                    }
                }
            }
            for (key, why) in [
                ("ISTIO_META_MESH_ID", Rejoin::MeshId),
                ("TRUST_DOMAIN", Rejoin::TrustDomain),
                ("ISTIO_META_CLUSTER_ID", Rejoin::ClusterId),
            ] {
                let (old, new) = env_changes(text, key);
                if (old.is_some() || new.is_some()) && old != new {
                    out.insert(why);
                }
            }
        }
        _ => {}
    }
    out
}

/// One VM's entry: its change, why it re-joins, its diff.
struct VmEntry<'a> {
    vm: VmRef,
    what: &'static str,
    rejoin: BTreeSet<Rejoin>,
    diffs: Vec<FileDiff<'a>>,
}

/// The plan's VMs, removals first, then changes (those that re-join first), moves and
/// additions, each with its diffs; and the diffs of files that belong to no VM.
fn entries(plan: &Plan) -> (Vec<VmEntry<'_>>, Vec<FileDiff<'_>>) {
    let prefix = plan.path.len() + 1;
    let diff = plan.diff.as_deref().unwrap_or_default();
    let mut per_vm: BTreeMap<(String, String, String), Vec<FileDiff<'_>>> = BTreeMap::new();
    let mut other_diffs = Vec::new();
    for f in split_diff(diff) {
        match f.path.get(prefix..).and_then(vm_of_path) {
            Some(v) => per_vm
                .entry((v.namespace.into(), v.group.into(), v.vm.into()))
                .or_default()
                .push(f),
            None => other_diffs.push(f),
        }
    }
    let mut take = |vm: &VmRef| {
        per_vm
            .remove(&(vm.namespace.clone(), vm.group.clone(), vm.name.clone()))
            .unwrap_or_default()
    };
    let mut entries: Vec<VmEntry<'_>> = Vec::new();
    // Removals first, then changes (the ones that re-join first), moves, additions.
    for vm in &plan.vms.removed {
        entries.push(VmEntry {
            diffs: take(vm),
            vm: vm.clone(),
            what: "removed",
            rejoin: BTreeSet::new(),
        });
    }
    let mut changed: Vec<VmEntry<'_>> = plan
        .vms
        .changed
        .iter()
        .map(|vm| {
            let diffs = take(vm);
            let rejoin = diffs
                .iter()
                .filter_map(|d| {
                    let rel = d.path.get(prefix..)?;
                    let (dir, file) = rel.rsplit_once('/')?;
                    dir.ends_with(&format!("/{BOOTSTRAP_DIR}"))
                        .then(|| rejoins(file, d.text))
                })
                .flatten()
                .collect();
            VmEntry {
                vm: vm.clone(),
                what: "changed",
                rejoin,
                diffs,
            }
        })
        .collect();
    changed.sort_by_key(|e| e.rejoin.is_empty());
    entries.extend(changed);
    for m in &plan.vms.moved {
        let mut diffs = take(&m.from);
        diffs.extend(take(&m.to));
        entries.push(VmEntry {
            vm: m.to.clone(),
            what: "moved",
            rejoin: BTreeSet::new(),
            diffs,
        });
    }
    for vm in &plan.vms.added {
        entries.push(VmEntry {
            diffs: take(vm),
            vm: vm.clone(),
            what: "added",
            rejoin: BTreeSet::new(),
        });
    }

    (entries, other_diffs)
}

/// How many VMs re-join, and how many for each reason.
fn rejoin_counts(entries: &[VmEntry<'_>]) -> (usize, BTreeMap<Rejoin, usize>) {
    let mut by_reason: BTreeMap<Rejoin, usize> = BTreeMap::new();
    let mut total = 0;
    for e in entries.iter().filter(|e| !e.rejoin.is_empty()) {
        total += 1;
        for r in &e.rejoin {
            *by_reason.entry(*r).or_default() += 1;
        }
    }
    (total, by_reason)
}

fn reasons(by_reason: &BTreeMap<Rejoin, usize>) -> String {
    by_reason
        .iter()
        .map(|(r, n)| format!("{} ({n} VM{})", r.label(), plural(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comment for `plan` (made with its unified diff), in parts of at most `budget`
/// characters, each starting with its [`marker`] (by the fleet's `gitops.path`).
pub fn markdown(plan: &Plan, budget: usize) -> Vec<String> {
    let (entries, other_diffs) = entries(plan);
    let head = summary(plan, &entries);
    let blocks: Vec<String> = entries
        .iter()
        .map(|e| vm_block(e, budget / 2))
        .chain((!other_diffs.is_empty()).then(|| {
            fold(
                &format!("{} other files", other_diffs.len()),
                &other_diffs,
                budget / 2,
            )
        }))
        .collect();
    pack(&plan.path, head, blocks, budget)
}

/// The head of the comment: verdict, re-joins, removals, counts per group, other changes.
fn summary(plan: &Plan, entries: &[VmEntry<'_>]) -> String {
    let mut s = String::new();
    let v = &plan.vms;
    let base = plan.base.map_or("a new branch".to_owned(), |b| {
        format!("`{}`", &b.to_string()[..10])
    });
    let _ = writeln!(s, "### meshvm: `{}` on `{}`\n", plan.path, plan.branch);
    if !plan.has_changes() {
        let _ = writeln!(s, "No changes (against {base}).");
        return s;
    }
    let removed = if v.removed.is_empty() {
        "0 removed".to_owned()
    } else {
        format!("**{} removed**", v.removed.len())
    };
    let _ = writeln!(
        s,
        "{removed}, {} added, {} changed, {} moved; {} files (against {base}).\n",
        v.added.len(),
        v.changed.len(),
        v.moved.len(),
        plan.files.len()
    );

    let (rejoining, by_reason) = rejoin_counts(entries);
    if rejoining > 0 {
        let _ = writeln!(
            s,
            "> [!WARNING]\n> **{} running VM{} must re-join the mesh**: {}. Their bootstrap \
             files change, so each needs new user-data (`meshvm cloud-init`) and a sidecar \
             restart; until then they keep the old settings.\n",
            rejoining,
            plural(rejoining),
            reasons(&by_reason)
        );
    }
    if !v.removed.is_empty() {
        let _ = writeln!(
            s,
            "> [!CAUTION]\n> **{} VM{} removed**: {}",
            v.removed.len(),
            plural(v.removed.len()),
            list(
                v.removed
                    .iter()
                    .map(|vm| format!("`{}` ({}/{})", vm.name, vm.namespace, vm.group))
            )
        );
        if let Some((n, of)) = plan.mass_removal() {
            let _ = writeln!(
                s,
                ">\n> This removes {n} of the {of} committed VMs: `gitops sync` refuses it \
                 without `--allow-mass-removal`."
            );
        }
        s.push('\n');
    }
    if !plan.removed_groups.is_empty() {
        let _ = writeln!(
            s,
            "> [!CAUTION]\n> **Group{} removed**: {}. Flux prunes their objects; Argo CD keeps \
             each group's Application and the objects it applied until they are deleted by hand \
             (`meshvm gitops diff` lists the commands).\n",
            plural(plan.removed_groups.len()),
            list(
                plan.removed_groups
                    .iter()
                    .map(|g| format!("`{}/{}`", g.namespace, g.group))
            )
        );
    }
    if !plan.overwrites.is_empty() {
        let _ = writeln!(
            s,
            "> [!CAUTION]\n> **{} file{} edited by hand** would be overwritten (sync refuses \
             without `--force`): {}\n",
            plan.overwrites.len(),
            plural(plan.overwrites.len()),
            list(plan.overwrites.iter().map(|p| format!("`{p}`")))
        );
    }

    let rows = group_counts(plan);
    if !rows.is_empty() {
        s.push_str("| group | added | changed | moved | removed |\n|---|--:|--:|--:|--:|\n");
        for (group, c) in rows {
            let removed = if c[3] > 0 {
                format!("**{}**", c[3])
            } else {
                "0".into()
            };
            let _ = writeln!(
                s,
                "| `{group}` | {} | {} | {} | {removed} |",
                c[0], c[1], c[2]
            );
        }
        s.push('\n');
    }
    let others: Vec<String> = plan
        .other_files()
        .map(|f| format!("`{}{}`", f.change.sign(), &f.path[plan.path.len() + 1..]))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(s, "Other files: {}\n", others.join(", "));
    }
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// At most 20 items, then how many more.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let mut shown = items
        .iter()
        .take(20)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 20 {
        let _ = write!(shown, " and {} more", items.len() - 20);
    }
    shown
}

/// One VM's folded diff.
fn vm_block(e: &VmEntry<'_>, limit: usize) -> String {
    let mut title = format!(
        "<code>{}</code> ({}/{}) {}",
        e.vm.name, e.vm.namespace, e.vm.group, e.what
    );
    if !e.rejoin.is_empty() {
        let reasons: Vec<&str> = e.rejoin.iter().map(|r| r.label()).collect();
        let _ = write!(title, ": re-joins ({})", reasons.join(", "));
    }
    fold(&title, &e.diffs, limit)
}

/// A `<details>` block holding the diffs, cut at `limit` characters.
fn fold(title: &str, diffs: &[FileDiff<'_>], limit: usize) -> String {
    let mut body: String = diffs.iter().map(|d| d.text).collect();
    if body.len() > limit {
        let mut cut = limit;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = body[..cut].rfind('\n').map_or(0, |i| i + 1);
        let left = body[cut..].lines().count();
        body.truncate(cut);
        let _ = writeln!(
            body,
            "… {left} more lines: run `meshvm gitops diff` to see them all"
        );
    }
    // A fence longer than any backtick run in the diff.
    let longest = body
        .split(|c| c != '`')
        .map(str::len)
        .max()
        .unwrap_or_default();
    let fence = "`".repeat(longest.max(2) + 1);
    format!("<details><summary>{title}</summary>\n\n{fence}diff\n{body}{fence}\n\n</details>\n")
}

const FOOTER_ROOM: usize = 40;

/// The head and the blocks in parts of at most `budget` characters, each starting with its
/// marker line; a part after the first says which it is.
fn pack(path: &str, head: String, blocks: Vec<String>, budget: usize) -> Vec<String> {
    // Room for the "Part i of n" line added at the end.
    let budget = budget.saturating_sub(FOOTER_ROOM);
    let part_head = |n: usize| format!("{}\n", marker(path, n));
    let mut parts = vec![format!("{}{head}", part_head(1))];
    for block in blocks {
        let last = parts.last_mut().expect("one part at least");
        if last.chars().count() + block.chars().count() <= budget {
            last.push_str(&block);
        } else {
            let n = parts.len() + 1;
            parts.push(format!(
                "{}### meshvm: `{path}` (part {n})\n\n{block}",
                part_head(n)
            ));
        }
    }
    let total = parts.len();
    if total > 1 {
        for (i, part) in parts.iter_mut().enumerate() {
            let _ = writeln!(part, "\n_Part {} of {total}._", i + 1);
        }
    }
    parts
}

/// Per group (`namespace/group`): VMs added, changed, moved in, removed; the groups that lose
/// VMs first, then by name.
pub fn group_counts(plan: &Plan) -> Vec<(String, [usize; 4])> {
    let mut groups: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    let v = &plan.vms;
    for (vms, i) in [(&v.added, 0), (&v.changed, 1), (&v.removed, 3)] {
        for vm in vms {
            groups
                .entry(format!("{}/{}", vm.namespace, vm.group))
                .or_default()[i] += 1;
        }
    }
    for m in &v.moved {
        groups
            .entry(format!("{}/{}", m.to.namespace, m.to.group))
            .or_default()[2] += 1;
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by_key(|(_, c)| std::cmp::Reverse(c[3]));
    rows
}

/// `gitops diff --stat`: a few lines for a terminal: the counts, one line per group, the VMs
/// that must re-join and the removals.
pub fn stat(plan: &Plan) -> String {
    let mut s = String::new();
    let v = &plan.vms;
    let base = plan.base.map_or("a new branch".to_owned(), |b| {
        b.to_string()[..10].to_owned()
    });
    if !plan.has_changes() {
        let _ = writeln!(
            s,
            "{} on {} (against {base}): no changes",
            plan.path, plan.branch
        );
        return s;
    }
    let _ = writeln!(
        s,
        "{} on {} (against {base}): {} removed, {} added, {} changed, {} moved; {} files",
        plan.path,
        plan.branch,
        v.removed.len(),
        v.added.len(),
        v.changed.len(),
        v.moved.len(),
        plan.files.len()
    );
    let rows = group_counts(plan);
    let width = rows.iter().map(|(g, _)| g.len()).max().unwrap_or_default();
    for (group, c) in &rows {
        let _ = writeln!(
            s,
            "  {group:<width$}  +{} ~{} >{} -{}",
            c[0], c[1], c[2], c[3]
        );
    }
    let others = plan.other_files().count();
    if others > 0 {
        let _ = writeln!(s, "  and {others} other file{}", plural(others));
    }
    let (entries, _) = entries(plan);
    let (rejoining, by_reason) = rejoin_counts(&entries);
    if rejoining > 0 {
        let _ = writeln!(
            s,
            "re-join: {rejoining} running VM{} need new user-data: {}",
            plural(rejoining),
            reasons(&by_reason)
        );
    }
    if !v.removed.is_empty() {
        let _ = writeln!(
            s,
            "removed: {}",
            list(v.removed.iter().map(|vm| vm.name.clone()))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_told_from_another_ca_address() {
        let diff = |old: &str, new: &str| format!("-CA_ADDR='{old}'\n+CA_ADDR='{new}'\n");
        assert_eq!(
            rejoins(
                "cluster.env",
                &diff(
                    "istiod.istio-system.svc:15012",
                    "istiod-1-28.istio-system.svc:15012"
                )
            ),
            [Rejoin::Revision].into()
        );
        assert_eq!(
            rejoins(
                "cluster.env",
                &diff("istiod.istio-system.svc:15012", "ca.example.org:15012")
            ),
            [Rejoin::CaAddress].into()
        );
        assert_eq!(
            rejoins(
                "cluster.env",
                "-ISTIO_META_MESH_ID='a'\n+ISTIO_META_MESH_ID='b'\n"
            ),
            [Rejoin::MeshId].into()
        );
        assert!(rejoins("cluster.env", "-LOG_LEVEL='info'\n+LOG_LEVEL='debug'\n").is_empty());
        assert_eq!(
            rejoins("root-cert.pem", ""),
            [Rejoin::RootCertificate].into()
        );
        assert!(rejoins("hosts", "-a\n+b\n").is_empty());
    }

    #[test]
    fn parts_stay_within_the_budget_and_each_has_its_marker() {
        let blocks: Vec<String> = (0..10)
            .map(|i| format!("{i}{}\n", "x".repeat(90)))
            .collect();
        let parts = pack("clusters/c1", "head\n".into(), blocks, 300);
        assert!(parts.len() > 3, "{parts:?}");
        for (i, p) in parts.iter().enumerate() {
            assert!(p.starts_with(&format!("{}\n", marker("clusters/c1", i + 1))));
            assert!(p.chars().count() <= 300, "{}", p.len());
        }
        let all: String = parts.concat();
        for i in 0..10 {
            assert!(all.contains(&format!("{i}xxx")), "block {i} is in a part");
        }
    }
}

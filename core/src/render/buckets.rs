//! Very large workload groups split into stable buckets (`gitops.bucketThreshold`).
//!
//! A group with more VMs than the threshold is applied by one Argo CD Application / Flux
//! Kustomization per bucket (its VMs' WorkloadEntries) plus the group's own (WorkloadGroup,
//! ServiceEntry), so no single apply grows with the group.
//!
//! The rule, and why (docs/tree.md, "Very large groups"):
//! - A group of `n` VMs above threshold `t` has `ceil(2n / t)` buckets: on average between
//!   `t/4` and `t/2` VMs each, so that the hash's uneven spread stays under `t`.
//! - A VM's bucket is Lamping and Veach's jump consistent hash of the first 8 bytes of the
//!   SHA-256 of its name. It depends on the VM's name and the bucket count only, so adding or
//!   removing a VM never moves another VM unless the count changes; and when the count grows
//!   from `k` to `k + 1`, the only VMs that move are those that go to the new, last bucket
//!   (about `n / (k + 1)`, as many as joined since the last growth); when it shrinks, only the
//!   VMs of the last bucket move. A modulo rule would move almost every VM each time.
//!
//! Hand-written rather than a crate: the jump hash is eight lines of published arithmetic
//! whose output is part of the tree's format (it must never change with a dependency's
//! version); SHA-256 comes from `sha2`, already used for names.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::spec::Workload;

/// How many buckets a group of `vms` VMs is split into, or `None` when it is not split
/// (no threshold, or no more VMs than the threshold).
pub fn bucket_count(vms: usize, threshold: Option<u32>) -> Option<u32> {
    let t = u64::from(threshold?);
    let n = vms as u64;
    if n <= t {
        return None;
    }
    Some(u32::try_from((2 * n).div_ceil(t)).unwrap_or(u32::MAX))
}

/// The bucket, in `0..count`, of the VM named `vm`.
pub fn bucket_of(vm: &str, count: u32) -> u32 {
    let hash = Sha256::digest(vm.as_bytes());
    jump(
        u64::from_be_bytes(hash[..8].try_into().expect("8 bytes")),
        count,
    )
}

/// Jump consistent hash (Lamping & Veach, 2014, <https://arxiv.org/abs/1406.2294>): the
/// bucket in `0..count` of `key`.
fn jump(mut key: u64, count: u32) -> u32 {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < i64::from(count) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

/// The VMs of each bucket of a group (index = bucket; a bucket may be empty), or `None`
/// when the group is not split. Groups whose VMs istiod registers itself are never split:
/// their directory lists no VMs.
pub fn split(w: &Workload, threshold: Option<u32>) -> Option<Vec<BTreeSet<&str>>> {
    if w.auto_register {
        return None;
    }
    let count = bucket_count(w.instances.len(), threshold)?;
    let mut buckets = vec![BTreeSet::new(); count as usize];
    for vm in &w.instances {
        buckets[bucket_of(&vm.name, count) as usize].insert(vm.name.as_str());
    }
    Some(buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("vm-{i}")).collect()
    }

    #[test]
    fn groups_at_or_below_the_threshold_are_not_split() {
        for (vms, threshold, count) in [
            (10_000, None, None),
            (500, Some(500), None),
            (501, Some(500), Some(3)),
            (1_000, Some(500), Some(4)),
            (10_000, Some(500), Some(40)),
            (3, Some(2), Some(3)),
        ] {
            assert_eq!(
                bucket_count(vms, threshold),
                count,
                "{vms} VMs, {threshold:?}"
            );
        }
    }

    /// The reference values other implementations test (the paper's C++, Go, Python, Rust
    /// ports), then our key of a few names: a name's bucket is part of the tree's format and
    /// the same on every platform and version.
    #[test]
    fn a_vm_always_lands_in_the_same_bucket() {
        for (key, count, bucket) in [(0, 60, 0), (1, 60, 55), (2, 60, 46), (256, 1024, 520)] {
            assert_eq!(jump(key, count), bucket, "jump({key}, {count})");
        }
        let got: Vec<u32> = ["vm-0", "vm-1", "tester-1", "db-42"]
            .iter()
            .map(|vm| bucket_of(vm, 40))
            .collect();
        assert_eq!(got, [16, 35, 11, 30]);
        assert_eq!(bucket_of("anything", 1), 0);
    }

    #[test]
    fn adding_or_removing_vms_moves_no_other_vm_while_the_count_stays() {
        let vms = names(1_000);
        let before: Vec<u32> = vms.iter().map(|vm| bucket_of(vm, 8)).collect();
        // Same count, VMs around them added or removed: each VM keeps its bucket, because
        // its bucket depends only on its name and the count.
        let more = names(1_100);
        for (vm, b) in vms.iter().zip(&before) {
            assert_eq!(bucket_of(vm, 8), *b, "{vm}");
        }
        assert!(more.iter().all(|vm| bucket_of(vm, 8) < 8));
    }

    #[test]
    fn growing_by_one_bucket_moves_only_vms_into_the_new_bucket() {
        let vms = names(10_000);
        for k in [1u32, 3, 8, 39] {
            let mut moved = 0;
            for vm in &vms {
                let (old, new) = (bucket_of(vm, k), bucket_of(vm, k + 1));
                if old != new {
                    assert_eq!(
                        new, k,
                        "{vm} moved from {old} to {new}, not to the new bucket"
                    );
                    moved += 1;
                }
            }
            // About 1/(k+1) of the VMs move: within 20 % of it.
            let expected = vms.len() as f64 / f64::from(k + 1);
            assert!(
                (moved as f64 - expected).abs() < expected * 0.2,
                "{k} → {}: {moved} moved, expected ≈ {expected}",
                k + 1
            );
        }
    }

    #[test]
    fn buckets_stay_under_the_threshold() {
        // 10,000 VMs, threshold 500: 40 buckets of 250 on average; none reaches 500.
        let vms = names(10_000);
        let count = bucket_count(vms.len(), Some(500)).unwrap();
        let mut sizes = vec![0usize; count as usize];
        for vm in &vms {
            sizes[bucket_of(vm, count) as usize] += 1;
        }
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(*max < 500 && *min > 0, "sizes {min}..{max}");
    }
}

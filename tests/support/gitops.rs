//! Helpers of the `meshvm gitops` tests: a scratch area with a HOME of its own and the
//! command line run there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Run, checked, fixture, git, meshvm};

pub const OWNED: &str = "clusters/cluster1";

/// A scratch area: fleet files, a HOME without git config or known_hosts, a cache dir, and
/// a directory of server repositories.
pub struct Scratch {
    tmp: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let s = Scratch {
            tmp: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(s.home()).unwrap();
        fs::create_dir_all(s.srv()).unwrap();
        s
    }
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    pub fn srv(&self) -> PathBuf {
        self.path().join("srv")
    }
    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// Writes the seed fleet with these VMs (name, address) of the `tester` group.
    pub fn fleet(&self, vms: &[(&str, &str)]) -> PathBuf {
        let seed = fs::read_to_string(fixture("fleets/seed/meshvm.yaml")).unwrap();
        let head = &seed[..seed
            .find("    instances:\n")
            .expect("the seed lists instances")];
        let mut text = format!("{head}    instances:\n");
        for (name, address) in vms {
            text.push_str(&format!(
                "      - name: {name}\n        address: {address}\n"
            ));
        }
        let file = self.path().join("meshvm.yaml");
        fs::write(&file, text).unwrap();
        file
    }

    /// `meshvm gitops <args…>` with this scratch's HOME and cache, and no ambient credentials.
    pub fn meshvm(&self, args: &[&str]) -> Command {
        let mut cmd = meshvm();
        cmd.current_dir(self.path())
            .env("HOME", self.home())
            .env("MESHVM_CACHE_DIR", self.cache())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MESHVM_GIT_TOKEN")
            .env_remove("MESHVM_SSH_KEY")
            .env_remove("MESHVM_SSH_KEY_PASSPHRASE")
            .env_remove("MESHVM_REPO")
            .env_remove("MESHVM_GIT_AUTHOR")
            .env_remove("MESHVM_GIT_COMMITTER")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .arg("gitops")
            .args(args)
            .arg("-f")
            .arg(self.path().join("meshvm.yaml"));
        cmd
    }
}

pub fn files(repo: &Path, rev: &str) -> Vec<String> {
    git(repo, &["ls-tree", "-r", "--name-only", rev])
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn ok(r: &Run) {
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// A human clones `url`, applies `change` to the work tree, commits and pushes.
pub fn human_push(url: &str, dir: &Path, change: impl FnOnce(&Path)) {
    checked(Command::new("git").args(["clone", "-q", url]).arg(dir));
    change(dir);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "human change"]);
    git(dir, &["push", "-q", "origin", "HEAD:main"]);
}

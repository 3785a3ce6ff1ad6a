//! Fetch and push, with the checks libgit2 leaves to its caller: credentials tried once each
//! (the callback is called again after every failure), SSH host keys checked against a pinned
//! fingerprint or known_hosts, and the server's answer for every pushed ref read (`push()`
//! returns Ok even when a hook rejects the ref).

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode,
    FetchOptions, Oid, PushOptions, Remote, RemoteCallbacks, Repository,
};

use super::target::{redact_url, ssh_host_port};
use super::{Event, GitError, Step, known_hosts};

/// How meshvm authenticates to remotes. Secrets come from the environment (the CLI reads
/// them), never from the command line; `Debug` does not show them.
#[derive(Clone, Default)]
pub struct Auth {
    /// HTTPS token (`MESHVM_GIT_TOKEN`), sent as the password of HTTP basic auth.
    pub token: Option<String>,
    /// User name sent with the token when the URL names none; `x-access-token` by default
    /// (GitHub; GitLab wants `oauth2`, Gitea/Bitbucket any name).
    pub token_username: Option<String>,
    /// Private key file for SSH (`MESHVM_SSH_KEY`).
    pub ssh_key: Option<PathBuf>,
    /// Its passphrase (`MESHVM_SSH_KEY_PASSPHRASE`).
    pub ssh_key_passphrase: Option<String>,
    /// Ask the ssh-agent at `SSH_AUTH_SOCK`.
    pub ssh_agent: bool,
    /// Ask Git's credential helpers (`credential.helper` in git config).
    pub credential_helpers: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_username", &self.token_username)
            .field("ssh_key", &self.ssh_key)
            .field(
                "ssh_key_passphrase",
                &self.ssh_key_passphrase.as_ref().map(|_| "***"),
            )
            .field("ssh_agent", &self.ssh_agent)
            .field("credential_helpers", &self.credential_helpers)
            .finish()
    }
}

/// How SSH host keys are trusted.
#[derive(Debug, Clone, Default)]
pub struct HostKeys {
    /// Accepted fingerprints (`SHA256:…`); when any is given, known_hosts is not read.
    pub pinned: Vec<String>,
    /// known_hosts files, read in order.
    pub known_hosts: Vec<PathBuf>,
}

/// The remote side of a sync.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// The name of the remote in the repository's config.
    pub name: String,
    pub url: String,
    /// The branch on the remote.
    pub branch: String,
}

impl RemoteSpec {
    /// The remote-tracking ref that mirrors the remote branch.
    pub fn tracking_ref(&self) -> String {
        format!("refs/remotes/{}/{}", self.name, self.branch)
    }
    fn remote_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }
}

/// What went wrong inside a callback, kept for the error the operation then returns.
#[derive(Default)]
struct Failure(RefCell<Option<GitError>>);

impl Failure {
    fn set(&self, e: GitError) -> git2::Error {
        let msg = e.to_string();
        *self.0.borrow_mut() = Some(e);
        git2::Error::from_str(&msg)
    }
    fn take(&self) -> Option<GitError> {
        self.0.borrow_mut().take()
    }
}

fn callbacks<'a>(
    repo: &Repository,
    spec: &'a RemoteSpec,
    auth: &'a Auth,
    host_keys: &'a HostKeys,
    failure: Rc<Failure>,
) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    let config = repo.config().ok();
    let url = redact_url(&spec.url);
    let mut tried: Vec<&'static str> = Vec::new();
    let mut helpers_asked = false;
    let fail = failure.clone();
    cbs.credentials(move |cb_url, user_from_url, allowed| {
        // SSH asks for the user name first when the URL has none.
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        let mut attempt = |what: &'static str| {
            let first = !tried.contains(&what);
            if first {
                tried.push(what);
            }
            first
        };
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = user_from_url.unwrap_or("git");
            if auth.ssh_agent && attempt("ssh-agent") {
                return Cred::ssh_key_from_agent(user);
            }
            if let Some(key) = &auth.ssh_key {
                if attempt("the SSH key file (MESHVM_SSH_KEY)") {
                    return Cred::ssh_key(user, None, key, auth.ssh_key_passphrase.as_deref());
                }
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = &auth.token {
                if attempt("the token (MESHVM_GIT_TOKEN)") {
                    let user = user_from_url
                        .or(auth.token_username.as_deref())
                        .unwrap_or("x-access-token");
                    return Cred::userpass_plaintext(user, token);
                }
            }
            // Asked once; counted as tried only when a helper had something to offer.
            if auth.credential_helpers && !helpers_asked {
                helpers_asked = true;
                if let Some(config) = &config {
                    if let Ok(cred) = Cred::credential_helper(config, cb_url, user_from_url) {
                        tried.push("git credential helpers");
                        return Ok(cred);
                    }
                }
            }
        }
        Err(fail.set(GitError::Auth {
            url: url.clone(),
            tried: tried.iter().map(|s| s.to_string()).collect(),
            ssh: allowed.contains(CredentialType::SSH_KEY),
        }))
    });

    let fail = failure;
    cbs.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: the system's CA store has decided; keep its verdict.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(blob) = hostkey.hostkey() else {
            return Err(fail.set(GitError::HostKey {
                url: redact_url(&spec.url),
                detail: "the server's host key could not be read".into(),
                unknown: None,
            }));
        };
        let fp = known_hosts::fingerprint(blob);
        let (host, port) = ssh_host_port(&spec.url).unwrap_or((host.to_owned(), 22));
        let key_type = hostkey.hostkey_type().map_or("unknown", |t| t.name());
        let reject_key = |detail: String, unknown: Option<String>| {
            Err(fail.set(GitError::HostKey {
                url: redact_url(&spec.url),
                detail,
                unknown,
            }))
        };
        let reject = |detail: String| reject_key(detail, None);
        if !host_keys.pinned.is_empty() {
            return if host_keys.pinned.contains(&fp) {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                reject(format!(
                    "the server offered {key_type} {fp}, which is not the pinned fingerprint \
                     ({}); if the server's key was changed on purpose, pin the new one",
                    host_keys.pinned.join(", ")
                ))
            };
        }
        let files = &host_keys.known_hosts;
        let list = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let name = if port == 22 {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        match known_hosts::check(files, &host, port, key_type, blob) {
            known_hosts::Verdict::Match => Ok(CertificateCheckStatus::CertificateOk),
            known_hosts::Verdict::Unknown => reject_key(
                format!(
                    "{name} is not in the known hosts ({list}); it offered {key_type} {fp}. \
                     Check that fingerprint with the server's operator, then pin it, or add the \
                     key to a known_hosts file (ssh-keyscan -p {port} {host})"
                ),
                Some(fp.clone()),
            ),
            known_hosts::Verdict::Changed { file, line } => reject(format!(
                "the host key of {name} CHANGED: it offered {key_type} {fp}, but {}:{line} \
                 holds another key; this may be an attack; fix known_hosts only once you know why",
                file.display()
            )),
            known_hosts::Verdict::Revoked { file, line } => reject(format!(
                "{name} offered a key revoked in {}:{line}",
                file.display()
            )),
        }
    });
    cbs
}

fn open_remote<'r>(repo: &'r Repository, spec: &RemoteSpec) -> Result<Remote<'r>, GitError> {
    match repo.find_remote(&spec.name) {
        Ok(remote) => Ok(remote),
        Err(_) => repo
            .remote_anonymous(&spec.url)
            .map_err(GitError::git("opening the remote")),
    }
}

/// Maps a failed network operation to the error the user should see.
fn classify(e: git2::Error, failure: &Failure, spec: &RemoteSpec, doing: &str) -> GitError {
    if let Some(f) = failure.take() {
        return f;
    }
    let url = redact_url(&spec.url);
    if e.code() == ErrorCode::Auth {
        return GitError::Auth {
            url,
            tried: Vec::new(),
            ssh: false,
        };
    }
    if e.code() == ErrorCode::Certificate {
        return GitError::HostKey {
            url,
            detail: e.message().to_owned(),
            unknown: None,
        };
    }
    match e.class() {
        ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh | ErrorClass::Http => GitError::Remote {
            url,
            doing: doing.to_owned(),
            detail: e.message().to_owned(),
        },
        _ => GitError::git(doing)(e),
    }
}

/// Fetches the remote branch into its tracking ref; returns the remote tip, `None` when the
/// branch does not exist there (an empty repository).
pub fn fetch(
    repo: &Repository,
    spec: &RemoteSpec,
    auth: &Auth,
    host_keys: &HostKeys,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Option<Oid>, GitError> {
    let failure = Rc::new(Failure::default());
    let mut cbs = callbacks(repo, spec, auth, host_keys, failure.clone());
    let progress = RefCell::new(on_event);
    cbs.transfer_progress(|p| {
        (progress.borrow_mut())(Event::Progress {
            step: Step::Fetch,
            done: p.received_objects(),
            total: p.total_objects(),
        });
        true
    });
    let mut opts = FetchOptions::new();
    opts.remote_callbacks(cbs)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false);
    let mut remote = open_remote(repo, spec)?;
    let refspec = format!("+{}:{}", spec.remote_ref(), spec.tracking_ref());
    remote
        .fetch(&[refspec], Some(&mut opts), Some("meshvm: fetch"))
        .map_err(|e| classify(e, &failure, spec, "fetching"))?;
    let advertised = remote
        .list()
        .map_err(GitError::git("listing the remote's branches"))?
        .iter()
        .find(|h| h.name() == spec.remote_ref())
        .map(|h| h.oid());
    if advertised.is_none() {
        // The branch is gone (or never was): forget a stale tracking ref.
        if let Ok(mut r) = repo.find_reference(&spec.tracking_ref()) {
            r.delete()
                .map_err(GitError::git("deleting a stale tracking ref"))?;
        }
    }
    Ok(advertised)
}

/// The remote's default branch (the branch its HEAD names), `None` for an empty remote.
pub fn default_branch(
    repo: &Repository,
    spec: &RemoteSpec,
    auth: &Auth,
    host_keys: &HostKeys,
) -> Result<Option<String>, GitError> {
    let failure = Rc::new(Failure::default());
    let cbs = callbacks(repo, spec, auth, host_keys, failure.clone());
    let mut remote = open_remote(repo, spec)?;
    let connection = remote
        .connect_auth(git2::Direction::Fetch, Some(cbs), None)
        .map_err(|e| classify(e, &failure, spec, "connecting to"))?;
    let name = match connection.default_branch() {
        Ok(name) => name.as_str().map(str::to_owned).ok(),
        Err(_) => None, // an empty repository has no default branch
    };
    Ok(name.and_then(|n| n.strip_prefix("refs/heads/").map(str::to_owned)))
}

/// A pushed ref and the server's answer for it (`None`: accepted).
type RefStatus = (String, Option<String>);

/// How a push ended, when it did not fail outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    Ok,
    /// The remote branch moved since it was fetched: fetch, rebuild, retry.
    Stale(String),
}

/// Pushes local `refs/heads/<local_branch>` to the remote branch, never forced.
pub fn push(
    repo: &Repository,
    spec: &RemoteSpec,
    local_branch: &str,
    auth: &Auth,
    host_keys: &HostKeys,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Pushed, GitError> {
    let failure = Rc::new(Failure::default());
    let mut cbs = callbacks(repo, spec, auth, host_keys, failure.clone());
    let statuses: Rc<RefCell<Vec<RefStatus>>> = Rc::default();
    let server_said: Rc<RefCell<String>> = Rc::default();
    {
        let statuses = statuses.clone();
        cbs.push_update_reference(move |refname, status| {
            statuses
                .borrow_mut()
                .push((refname.to_owned(), status.map(str::to_owned)));
            Ok(())
        });
        let server_said = server_said.clone();
        cbs.sideband_progress(move |bytes| {
            server_said
                .borrow_mut()
                .push_str(&String::from_utf8_lossy(bytes));
            true
        });
    }
    let progress = RefCell::new(on_event);
    cbs.push_transfer_progress(|done, total, _bytes| {
        (progress.borrow_mut())(Event::Progress {
            step: Step::Push,
            done,
            total,
        });
    });
    let mut opts = PushOptions::new();
    opts.remote_callbacks(cbs);
    let mut remote = open_remote(repo, spec)?;
    let refspec = format!("refs/heads/{local_branch}:{}", spec.remote_ref());
    let result = remote.push(&[refspec], Some(&mut opts));
    let said = without_progress(&server_said.borrow());
    if !said.is_empty() {
        (progress.borrow_mut())(Event::Remote(&said));
    }
    if let Err(e) = result {
        // libgit2 itself refuses a push that would not fast-forward what the server
        // advertised (someone pushed since our fetch).
        if e.code() == ErrorCode::NotFastForward {
            return Ok(Pushed::Stale(e.message().to_owned()));
        }
        return Err(classify(e, &failure, spec, "pushing"));
    }
    let statuses = statuses.borrow();
    let ours = statuses.iter().find(|(r, _)| *r == spec.remote_ref());
    match ours {
        Some((_, None)) => Ok(Pushed::Ok),
        Some((_, Some(status))) if is_stale(status) => Ok(Pushed::Stale(status.clone())),
        Some((refname, Some(status))) => Err(GitError::Rejected {
            url: redact_url(&spec.url),
            refname: refname.clone(),
            status: status.clone(),
            server_said: said,
        }),
        None => Err(GitError::Rejected {
            url: redact_url(&spec.url),
            refname: spec.remote_ref(),
            status: "the server did not report on the ref".into(),
            server_said: said,
        }),
    }
}

/// What the server said, without its progress meters (`Resolving deltas:  50% (1/2)`, redrawn
/// with carriage returns): they mean something on a terminal, nothing in a log or a message.
pub fn without_progress(said: &str) -> String {
    let is_meter = |line: &str| {
        let Some((label, rest)) = line.split_once(": ") else {
            return false;
        };
        let rest = rest.trim_start();
        label.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
            && rest.split_once('%').is_some_and(|(pct, after)| {
                !pct.is_empty()
                    && pct.chars().all(|c| c.is_ascii_digit())
                    && after.trim_start().starts_with('(')
            })
    };
    said.split(['\r', '\n'])
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && !is_meter(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Statuses that mean "the branch moved under you", from git's receive-pack: a race lost
/// between the advertisement and the update. Anything else (a hook, a protected branch) is a
/// rejection that retrying cannot fix.
fn is_stale(status: &str) -> bool {
    [
        "non-fast-forward",
        "fetch first",
        "stale info",
        "failed to update ref",
        "cannot lock ref",
    ]
    .iter()
    .any(|s| status.contains(s))
}

#[cfg(test)]
mod tests {
    use super::without_progress;

    #[test]
    fn progress_meters_are_dropped_from_what_the_server_said() {
        let said = "Resolving deltas:   0% (0/2)\rResolving deltas:  50% (1/2)\r\
                    Resolving deltas: 100% (2/2)\rResolving deltas: 100% (2/2), done.\n\
                    hook: deployed to staging\r\nChecking: 100% of the hooks: 3 rules\n\n";
        assert_eq!(
            without_progress(said),
            "hook: deployed to staging\nChecking: 100% of the hooks: 3 rules"
        );
        assert_eq!(without_progress(""), "");
    }
}

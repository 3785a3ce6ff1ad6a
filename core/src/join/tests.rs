//! The broker's decisions, one table of hostile and valid requests: every refusal has its
//! code, and nothing but a valid proof for an allowed identity gets a grant.

use testkit::join as sign;

use super::*;
use crate::spec::load_fleet_str;

const NOW: i64 = 1_800_000_000;
const AUD: &str = "https://broker.example:15012/v1/join";

const FLEET: &str = r#"
apiVersion: meshvm.io/v1alpha1
kind: Fleet
mesh: {meshID: m, clusterID: c, eastWestGateway: {address: 192.0.2.1}}
sidecar: {version: 1.28.0}
gitops: {engines: []}
workloads:
- name: web
  namespace: apps
  serviceAccount: web-sa
  join: {method: aws, accounts: ["111122223333"], regions: [eu-west-1]}
  instances:
  - {name: web-1, address: 10.0.0.11}
- name: asg
  namespace: apps
  autoRegister: true
  join: {method: aws, accounts: ["111122223333"]}
- name: gce
  namespace: apps
  join: {method: gcp, projects: [my-project], zones: [europe-west1-b]}
  instances:
  - {name: gce-1, address: 10.1.0.11}
- name: onprem
  namespace: apps
  join: {method: join-token}
- name: classic
  namespace: apps
"#;

fn policy() -> Policy {
    Policy::from_fleet(&load_fleet_str(FLEET, "meshvm.yaml".as_ref()).unwrap())
}

fn trust() -> Trust {
    Trust {
        aws: keys::KeySet::from_json(
            &serde_json::json!({"eu-west-1": sign::cert("aws"), "us-east-1": sign::cert("aws")})
                .to_string(),
        )
        .unwrap(),
        gcp: keys::KeySet::from_json(&serde_json::json!({"k1": sign::cert("gcp")}).to_string())
            .unwrap(),
        gcp_audience: AUD.into(),
        max_age: DEFAULT_MAX_AGE,
        aws_max_instance_age: None,
    }
}

fn request(group: &str, proof: Proof) -> JoinRequest {
    JoinRequest {
        namespace: "apps".into(),
        group: group.into(),
        nonce: "0123456789abcdef".into(),
        timestamp: NOW,
        proof,
    }
}

fn aws(account: &str, region: &str, ip: &str) -> Proof {
    let (document, signature) = sign::aws_proof(&sign::aws_document(account, region, "i-0abc", ip));
    Proof::Aws {
        document,
        signature,
    }
}

fn gcp(aud: &str, iat: i64, project: &str, name: &str) -> Proof {
    Proof::Gcp {
        jwt: sign::gcp_token(
            "k1",
            &sign::gcp_claims(aud, iat, iat + 3600, project, "europe-west1-b", name),
        ),
    }
}

#[test]
fn valid_proofs_get_grants_for_their_group_and_vm() {
    let (policy, trust) = (policy(), trust());
    let mut book = tokens::TokenBook::default();
    let cases = [
        (
            request("web", aws("111122223333", "eu-west-1", "10.0.0.11")),
            Some("web-1"),
            "aws:111122223333/eu-west-1/i-0abc",
        ),
        (
            request("asg", aws("111122223333", "us-east-1", "10.9.9.9")),
            None,
            "aws:111122223333/us-east-1/i-0abc",
        ),
        (
            request("gce", gcp(AUD, NOW - 10, "my-project", "gce-1")),
            Some("gce-1"),
            "gcp:my-project/europe-west1-b/4242",
        ),
    ];
    for (req, vm, identity) in cases {
        let grant = authorize(&policy, &trust, &mut book, &req, NOW).unwrap();
        assert_eq!(grant.instance.as_deref(), vm, "{req:?}");
        assert_eq!(grant.identity, identity);
        assert_eq!(grant.namespace, "apps");
    }
    let grant = authorize(
        &policy,
        &trust,
        &mut book,
        &request("web", aws("111122223333", "eu-west-1", "10.0.0.11")),
        NOW,
    )
    .unwrap();
    assert_eq!(grant.service_account, "web-sa");
}

#[test]
fn hostile_requests_are_refused_with_their_reason() {
    let (policy, trust) = (policy(), trust());
    let document = sign::aws_document("111122223333", "eu-west-1", "i-0abc", "10.0.0.11");
    let forged_doc = document.replace("10.0.0.11", "10.0.0.12");
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let signed_by_other = Proof::Aws {
        signature: b64(&sign::sign("gcp", document.as_bytes())),
        document: b64(document.as_bytes()),
    };
    let stale = JoinRequest {
        timestamp: NOW - 301,
        ..request("asg", aws("111122223333", "eu-west-1", "10.0.0.1"))
    };
    let future = JoinRequest {
        timestamp: NOW + 301,
        ..request("asg", aws("111122223333", "eu-west-1", "10.0.0.1"))
    };
    let short_nonce = JoinRequest {
        nonce: "abc".into(),
        ..request("asg", aws("111122223333", "eu-west-1", "10.0.0.1"))
    };
    let cases: Vec<(&str, JoinRequest, RefusalCode)> = vec![
        (
            "forged document",
            request(
                "web",
                Proof::Aws {
                    document: b64(forged_doc.as_bytes()),
                    signature: sign::aws_signature(&document),
                },
            ),
            RefusalCode::BadProof,
        ),
        (
            "signed by another key",
            request("web", signed_by_other),
            RefusalCode::BadProof,
        ),
        (
            "signature not base64",
            request(
                "web",
                Proof::Aws {
                    document: b64(document.as_bytes()),
                    signature: "!!".into(),
                },
            ),
            RefusalCode::BadProof,
        ),
        (
            "oversized document",
            request(
                "web",
                Proof::Aws {
                    document: b64(format!("{document}{}", " ".repeat(5000)).as_bytes()),
                    signature: sign::aws_signature(&document),
                },
            ),
            RefusalCode::BadProof,
        ),
        (
            "unknown region",
            request("asg", aws("111122223333", "ap-south-2", "10.0.0.1")),
            RefusalCode::BadProof,
        ),
        (
            "wrong account",
            request("web", aws("999988887777", "eu-west-1", "10.0.0.11")),
            RefusalCode::Forbidden,
        ),
        (
            "wrong region",
            request("web", aws("111122223333", "us-east-1", "10.0.0.11")),
            RefusalCode::Forbidden,
        ),
        (
            "address not in the fleet",
            request("web", aws("111122223333", "eu-west-1", "10.0.0.99")),
            RefusalCode::Forbidden,
        ),
        (
            "gcp expired",
            request("gce", gcp(AUD, NOW - 4000, "my-project", "gce-1")),
            RefusalCode::Expired,
        ),
        (
            "gcp wrong audience",
            request("gce", gcp("https://other", NOW, "my-project", "gce-1")),
            RefusalCode::BadProof,
        ),
        (
            "gcp wrong project",
            request("gce", gcp(AUD, NOW, "other-project", "gce-1")),
            RefusalCode::Forbidden,
        ),
        (
            "gcp unknown vm",
            request("gce", gcp(AUD, NOW, "my-project", "gce-9")),
            RefusalCode::Forbidden,
        ),
        (
            "gcp not a jwt",
            request("gce", Proof::Gcp { jwt: "a.b".into() }),
            RefusalCode::BadProof,
        ),
        (
            "gcp alg none",
            request(
                "gce",
                Proof::Gcp {
                    jwt: "eyJhbGciOiJub25lIn0.e30.".into(),
                },
            ),
            RefusalCode::BadProof,
        ),
        (
            "wrong method",
            request("web", gcp(AUD, NOW, "my-project", "gce-1")),
            RefusalCode::WrongMethod,
        ),
        (
            "token group",
            request("classic", aws("111122223333", "eu-west-1", "10.0.0.11")),
            RefusalCode::UnknownGroup,
        ),
        (
            "unknown group",
            request("nope", aws("111122223333", "eu-west-1", "10.0.0.11")),
            RefusalCode::UnknownGroup,
        ),
        (
            "unknown join token",
            request(
                "onprem",
                Proof::JoinToken {
                    token: format!("mvjt_000000000000_{}", "a".repeat(43)),
                },
            ),
            RefusalCode::BadToken,
        ),
        (
            "not a join token",
            request(
                "onprem",
                Proof::JoinToken {
                    token: "hunter2".into(),
                },
            ),
            RefusalCode::BadToken,
        ),
        ("stale", stale, RefusalCode::Stale),
        ("from the future", future, RefusalCode::Stale),
        ("short nonce", short_nonce, RefusalCode::BadRequest),
    ];
    for (name, req, code) in cases {
        let mut book = tokens::TokenBook::default();
        let refusal = authorize(&policy, &trust, &mut book, &req, NOW).unwrap_err();
        assert_eq!(refusal.code, code, "{name}: {refusal}");
        assert!(!refusal.reason.is_empty());
    }
}

#[test]
fn a_join_token_works_its_number_of_uses_then_is_used_up() {
    let (policy, trust) = (policy(), trust());
    let mut book = tokens::TokenBook::default();
    let created = book.create(
        [7; tokens::RANDOM_BYTES],
        "apps",
        "onprem",
        None,
        600,
        2,
        NOW,
    );
    assert!(!format!("{created:?}").contains(&created.token));
    assert!(
        !serde_json::to_string(&book)
            .unwrap()
            .contains(&created.token)
    );
    let req = request(
        "onprem",
        Proof::JoinToken {
            token: created.token.clone(),
        },
    );
    assert!(!format!("{req:?}").contains(&created.token));
    for _ in 0..2 {
        let grant = authorize(&policy, &trust, &mut book, &req, NOW).unwrap();
        assert_eq!(grant.identity, format!("join-token:{}", created.entry.id));
    }
    let used_up = authorize(&policy, &trust, &mut book, &req, NOW).unwrap_err();
    assert_eq!(
        (used_up.code, used_up.reason.contains("used up")),
        (RefusalCode::BadToken, true),
        "{used_up}"
    );
    assert!(!used_up.reason.contains(&created.token));

    let other = book.create(
        [8; tokens::RANDOM_BYTES],
        "apps",
        "onprem",
        None,
        600,
        1,
        NOW,
    );
    let late = authorize(
        &policy,
        &trust,
        &mut book,
        &JoinRequest {
            timestamp: NOW + 600,
            ..request(
                "onprem",
                Proof::JoinToken {
                    token: other.token.clone(),
                },
            )
        },
        NOW + 600,
    )
    .unwrap_err();
    assert_eq!(late.code, RefusalCode::Expired);
    assert!(book.revoke(&other.entry.id));
    let revoked = authorize(
        &policy,
        &trust,
        &mut book,
        &request("onprem", Proof::JoinToken { token: other.token }),
        NOW,
    )
    .unwrap_err();
    assert_eq!(revoked.code, RefusalCode::BadToken);

    let for_web = book.create([9; tokens::RANDOM_BYTES], "apps", "web", None, 600, 1, NOW);
    let mut wrong = request(
        "onprem",
        Proof::JoinToken {
            token: for_web.token,
        },
    );
    wrong.group = "onprem".into();
    let refusal = authorize(&policy, &trust, &mut book, &wrong, NOW).unwrap_err();
    assert_eq!(refusal.code, RefusalCode::Forbidden);
    assert_eq!(
        book.tokens
            .iter()
            .find(|e| e.id == for_web.entry.id)
            .unwrap()
            .uses_left,
        1,
        "a refused token is not consumed"
    );
}

#[test]
fn the_replay_cache_refuses_a_nonce_twice_until_it_expires() {
    let mut cache = guard::ReplayCache::new(2);
    cache.check_and_insert("a", NOW + 10, NOW).unwrap();
    assert_eq!(
        cache
            .check_and_insert("a", NOW + 10, NOW + 5)
            .unwrap_err()
            .code,
        RefusalCode::Replayed
    );
    cache.check_and_insert("b", NOW + 10, NOW).unwrap();
    assert_eq!(
        cache.check_and_insert("c", NOW + 10, NOW).unwrap_err().code,
        RefusalCode::RateLimited,
        "full"
    );
    cache.check_and_insert("c", NOW + 30, NOW + 11).unwrap();
    cache.check_and_insert("a", NOW + 30, NOW + 11).unwrap();
}

#[test]
fn the_rate_limit_allows_a_burst_then_the_refill_rate() {
    let mut limit = guard::RateLimiter::new(2.0, 3, 10);
    for _ in 0..3 {
        limit.allow(&"vm", 0.0).unwrap();
    }
    assert_eq!(
        limit.allow(&"vm", 0.0).unwrap_err().code,
        RefusalCode::RateLimited
    );
    limit.allow(&"other", 0.0).unwrap();
    limit.allow(&"vm", 0.5).unwrap();
    assert!(limit.allow(&"vm", 0.5).is_err());
}

#[test]
fn the_policy_lists_only_broker_groups_and_their_service_accounts() {
    let policy = policy();
    let names: Vec<&str> = policy.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["asg", "gce", "onprem", "web"]);
    let sas: Vec<_> = policy.service_accounts().into_iter().collect();
    assert_eq!(sas, [("apps", "default"), ("apps", "web-sa")]);
}

#[test]
fn request_bodies_are_bounded_and_strict() {
    let big = vec![b' '; protocol::MAX_BODY + 1];
    assert_eq!(
        protocol::parse_request(&big).unwrap_err().code,
        RefusalCode::TooLarge
    );
    let unknown = br#"{"namespace":"a","group":"b","nonce":"0123456789abcdef","timestamp":1,"proof":{"method":"join-token","token":"x"},"extra":1}"#;
    assert_eq!(
        protocol::parse_request(unknown).unwrap_err().code,
        RefusalCode::BadRequest
    );
    let secret = br#"{"namespace":"a","group":"b","nonce":"0123456789abcdef","timestamp":1,"proof":{"method":"join-token","token":"SECRET-VALUE","x":1}}"#;
    let refusal = protocol::parse_request(secret).unwrap_err();
    assert!(!refusal.reason.contains("SECRET"), "{refusal}");
}

/// `--aws-max-instance-age`: a document whose instance started longer ago (the fixture's
/// pendingTime is 2026-11-30T08:00:00Z, 46 days before NOW) is refused as expired, however
/// valid its signature; within the limit it joins; a document without a readable pendingTime
/// is refused when a limit is set.
#[test]
fn an_aws_document_older_than_the_maximum_instance_age_is_refused() {
    let policy = policy();
    let mut book = tokens::TokenBook::default();
    let req = request("web", aws("111122223333", "eu-west-1", "10.0.0.11"));
    let day = 86_400;
    let trust_with = |max| Trust {
        aws_max_instance_age: max,
        ..trust()
    };
    assert!(authorize(&policy, &trust_with(Some(60 * day)), &mut book, &req, NOW).is_ok());
    let refused =
        authorize(&policy, &trust_with(Some(30 * day)), &mut book, &req, NOW).unwrap_err();
    assert_eq!(refused.code, RefusalCode::Expired, "{refused:?}");
    assert!(
        refused.reason.contains("--aws-max-instance-age"),
        "{}",
        refused.reason
    );
    // Started in the future by more than the limit: refused too.
    assert!(
        authorize(
            &policy,
            &trust_with(Some(30 * day)),
            &mut book,
            &req,
            NOW - 100 * day
        )
        .is_err()
    );

    let document = sign::aws_document("111122223333", "eu-west-1", "i-0abc", "10.0.0.11")
        .replace("2026-11-30T08:00:00Z", "yesterday");
    let (document, signature) = sign::aws_proof(&document);
    let req = request(
        "web",
        Proof::Aws {
            document,
            signature,
        },
    );
    assert!(
        authorize(&policy, &trust(), &mut book, &req, NOW).is_ok(),
        "no limit, no check"
    );
    let refused =
        authorize(&policy, &trust_with(Some(60 * day)), &mut book, &req, NOW).unwrap_err();
    assert_eq!(refused.code, RefusalCode::BadProof, "{refused:?}");

    assert_eq!(aws::pending_time_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        aws::pending_time_seconds("2026-11-30T08:00:00Z"),
        Some(1_796_025_600)
    );
    for bad in [
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-30 08:00:00Z",
        "",
    ] {
        assert_eq!(aws::pending_time_seconds(bad), None, "{bad}");
    }
}

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
- name: vmss
  namespace: apps
  autoRegister: true
  join: {method: azure, subscriptions: ["0a1b2c3d-0000-4000-8000-000000000000"]}
- name: pinned
  namespace: apps
  autoRegister: true
  join:
    method: azure
    subscriptions: ["0a1b2c3d-0000-4000-8000-000000000000"]
    vmIds: ["11111111-2222-4333-8444-555555555555"]
- name: azstatic
  namespace: apps
  join: {method: azure, subscriptions: ["0a1b2c3d-0000-4000-8000-000000000000"]}
  instances:
  - {name: az-1, address: 10.2.0.11}
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
        aws_rsa2048: keys::KeySet::from_json(
            &serde_json::json!({"eu-west-1": sign::cert("aws"), "us-east-1": sign::cert("aws")})
                .to_string(),
        )
        .unwrap(),
        azure: azure::AzureTrust::from_pem(
            &sign::cert_file("azure-test-root"),
            &sign::cert_file("azure-test-intermediate"),
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
    assert_eq!(
        names,
        ["asg", "azstatic", "gce", "onprem", "pinned", "vmss", "web"]
    );
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

const SUB: &str = "0a1b2c3d-0000-4000-8000-000000000000";
const VM: &str = "11111111-2222-4333-8444-555555555555";
const NONCE: &str = "0123456789abcdef";

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// The `rsa2048` proof of `document`: the CMS SignedData AWS serves, by the fixture key
/// `key`, in `shape`, its content replaced by `tamper` after signing.
fn rsa2048(document: &str, key: &str, shape: sign::CmsShape, tamper: Option<&str>) -> Proof {
    let der = sign::signed_data(
        document.as_bytes(),
        key,
        "aws-test",
        shape,
        tamper.map(str::as_bytes),
    );
    // IMDS serves it as base64 in lines of 64.
    let text = b64(&der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    Proof::AwsRsa2048 {
        pkcs7: lines.join("\n"),
    }
}

/// The `azure` proof of an attested document: signed by the fixture key as the fixture
/// certificate `cert`, in `shape`.
fn attested(document: &str, cert: &str, shape: sign::CmsShape, tamper: Option<&str>) -> Proof {
    Proof::Azure {
        signature: b64(&sign::signed_data(
            document.as_bytes(),
            "azure",
            cert,
            shape,
            tamper.map(str::as_bytes),
        )),
    }
}

/// AWS's PKCS#7 `rsa2048` and Azure's attested document, both CMS SignedData: the real
/// signers' shape gets a grant; a forged, tampered, detached or foreign-signed one, a
/// certificate for another name or from another root, another subscription or VM, a stale,
/// expired or replayed (other nonce) document are refused, each with its reason.
#[test]
fn cms_signed_proofs_join_and_hostile_ones_are_refused() {
    let (policy, trust) = (policy(), trust());
    let document = sign::aws_document("111122223333", "eu-west-1", "i-0abc", "10.0.0.11");
    let azure_doc = sign::azure_document(NONCE, SUB, VM, NOW - 5);
    let valid = [
        (
            request("web", rsa2048(&document, "aws", sign::CmsShape::AWS, None)),
            Some("web-1"),
            "aws:111122223333/eu-west-1/i-0abc",
        ),
        (
            // Without signed attributes, the content itself is signed: also a valid CMS.
            request(
                "web",
                rsa2048(
                    &document,
                    "aws",
                    sign::CmsShape {
                        signed_attributes: false,
                        ..sign::CmsShape::AWS
                    },
                    None,
                ),
            ),
            Some("web-1"),
            "aws:111122223333/eu-west-1/i-0abc",
        ),
        (
            request(
                "vmss",
                attested(&azure_doc, "azure-test", sign::CmsShape::AZURE, None),
            ),
            None,
            "azure:0a1b2c3d-0000-4000-8000-000000000000/11111111-2222-4333-8444-555555555555",
        ),
        (
            request(
                "pinned",
                Proof::Azure {
                    signature: sign::azure_signature(&azure_doc),
                },
            ),
            None,
            "azure:0a1b2c3d-0000-4000-8000-000000000000/11111111-2222-4333-8444-555555555555",
        ),
    ];
    for (req, vm, identity) in valid {
        let mut book = tokens::TokenBook::default();
        let grant = authorize(&policy, &trust, &mut book, &req, NOW)
            .unwrap_or_else(|e| panic!("{req:?}: {e}"));
        assert_eq!(grant.instance.as_deref(), vm);
        assert_eq!(grant.identity, identity);
    }

    let forged = document.replace("10.0.0.11", "10.0.0.12");
    let other_vm = sign::azure_document(NONCE, SUB, "99999999-2222-4333-8444-555555555555", NOW);
    let other_sub = sign::azure_document(NONCE, "ffffffff-0000-4000-8000-000000000000", VM, NOW);
    let other_nonce = sign::azure_document("fedcba9876543210", SUB, VM, NOW);
    let expired = sign::azure_document(NONCE, SUB, VM, NOW - 7 * 3600);
    let old = sign::azure_document(NONCE, SUB, VM, NOW - 700);
    let az = |doc: &str, cert: &str, shape, tamper| attested(doc, cert, shape, tamper);
    let z = sign::CmsShape::AZURE;
    let cases: Vec<(&str, &str, Proof, RefusalCode, &str)> = vec![
        (
            "aws: content changed after signing",
            "web",
            rsa2048(&document, "aws", sign::CmsShape::AWS, Some(&forged)),
            RefusalCode::BadProof,
            "changed after signing",
        ),
        (
            "aws: forged, signed by another key",
            "web",
            rsa2048(&forged, "gcp", sign::CmsShape::AWS, None),
            RefusalCode::BadProof,
            "does not verify",
        ),
        (
            "aws: detached",
            "web",
            rsa2048(
                &document,
                "aws",
                sign::CmsShape {
                    attached: false,
                    ..sign::CmsShape::AWS
                },
                None,
            ),
            RefusalCode::BadProof,
            "detached",
        ),
        (
            "aws: unsigned content swapped, no signed attributes",
            "web",
            rsa2048(
                &document,
                "aws",
                sign::CmsShape {
                    signed_attributes: false,
                    ..sign::CmsShape::AWS
                },
                Some(&forged),
            ),
            RefusalCode::BadProof,
            "does not verify",
        ),
        (
            "aws: not CMS",
            "web",
            Proof::AwsRsa2048 {
                pkcs7: b64(document.as_bytes()),
            },
            RefusalCode::BadProof,
            "not a CMS",
        ),
        (
            "aws: not base64",
            "web",
            Proof::AwsRsa2048 { pkcs7: "!!".into() },
            RefusalCode::BadProof,
            "not base64",
        ),
        (
            "aws: oversized",
            "web",
            Proof::AwsRsa2048 {
                pkcs7: "A".repeat(20_000),
            },
            RefusalCode::BadProof,
            "more than",
        ),
        (
            "aws: wrong account",
            "web",
            rsa2048(
                &sign::aws_document("999988887777", "eu-west-1", "i-0abc", "10.0.0.11"),
                "aws",
                sign::CmsShape::AWS,
                None,
            ),
            RefusalCode::Forbidden,
            "join.accounts",
        ),
        (
            "aws: region without an rsa2048 certificate",
            "asg",
            rsa2048(
                &sign::aws_document("111122223333", "ap-south-2", "i-0abc", "10.0.0.11"),
                "aws",
                sign::CmsShape::AWS,
                None,
            ),
            RefusalCode::BadProof,
            "--aws-rsa2048-certs",
        ),
        (
            "azure: content changed after signing",
            "vmss",
            az(&azure_doc, "azure-test", z, Some(&other_sub)),
            RefusalCode::BadProof,
            "changed after signing",
        ),
        (
            "azure: signer certificate from another root",
            "vmss",
            az(&azure_doc, "azure-test-self-signed", z, None),
            RefusalCode::BadProof,
            "does not chain",
        ),
        (
            "azure: certificate for another name",
            "vmss",
            az(&azure_doc, "azure-test-other-name", z, None),
            RefusalCode::BadProof,
            "not for metadata.azure.com",
        ),
        (
            "azure: without its signer certificate",
            "vmss",
            az(
                &azure_doc,
                "azure-test",
                sign::CmsShape {
                    with_certificate: false,
                    ..z
                },
                None,
            ),
            RefusalCode::BadProof,
            "signer's certificate",
        ),
        (
            "azure: detached",
            "vmss",
            az(
                &azure_doc,
                "azure-test",
                sign::CmsShape {
                    attached: false,
                    ..z
                },
                None,
            ),
            RefusalCode::BadProof,
            "detached",
        ),
        (
            "azure: another subscription",
            "vmss",
            az(&other_sub, "azure-test", z, None),
            RefusalCode::Forbidden,
            "join.subscriptions",
        ),
        (
            "azure: a VM not in vmIds",
            "pinned",
            az(&other_vm, "azure-test", z, None),
            RefusalCode::Forbidden,
            "join.vmIds",
        ),
        (
            "azure: fetched for another request",
            "vmss",
            az(&other_nonce, "azure-test", z, None),
            RefusalCode::BadProof,
            "nonce",
        ),
        (
            "azure: expired",
            "vmss",
            az(&expired, "azure-test", z, None),
            RefusalCode::Expired,
            "expired",
        ),
        (
            "azure: made long before the request",
            "vmss",
            az(&old, "azure-test", z, None),
            RefusalCode::Stale,
            "fetch it for this request",
        ),
        (
            "azure: a static group",
            "azstatic",
            az(&azure_doc, "azure-test", z, None),
            RefusalCode::Forbidden,
            "auto-register",
        ),
        (
            "azure: an aws proof",
            "vmss",
            rsa2048(&document, "aws", sign::CmsShape::AWS, None),
            RefusalCode::WrongMethod,
            "joins by `azure`",
        ),
    ];
    for (name, group, proof, code, says) in cases {
        let mut book = tokens::TokenBook::default();
        let refusal =
            authorize(&policy, &trust, &mut book, &request(group, proof), NOW).expect_err(name);
        assert_eq!(refusal.code, code, "{name}: {refusal}");
        assert!(refusal.reason.contains(says), "{name}: {refusal}");
    }
}

#[test]
fn azure_timestamps_read_as_imds_writes_them() {
    assert_eq!(
        azure::timestamp_seconds("01/15/27 08:00:00 -0000"),
        Some(1_799_999_200 + 800)
    );
    for bad in [
        "13/15/27 08:00:00 -0000",
        "01/15/27 08:00:00 +0100",
        "2027-01-15T08:00:00Z",
        "",
    ] {
        assert_eq!(azure::timestamp_seconds(bad), None, "{bad}");
    }
}

/// SignedData made by OpenSSL (`openssl cms -sign -nodetach -md sha256`, with its signingTime
/// and S/MIME-capabilities attributes, as AWS's carries), not by the test signer: the
/// parser reads what another implementation writes. The same files seed the fuzz target.
#[test]
fn signed_data_made_by_openssl_verifies_and_a_flipped_bit_does_not() {
    let trust = trust();
    let read = |name: &str| std::fs::read(testkit::fixture(&format!("join/seeds/{name}"))).unwrap();
    let pem = |der: &[u8]| format!("-----BEGIN PKCS7-----\n{}\n-----END PKCS7-----\n", b64(der));

    let aws_der = read("aws-rsa2048.der");
    let doc = aws::verify_rsa2048(&pem(&aws_der), &trust.aws_rsa2048).unwrap();
    assert_eq!(
        (doc.account_id.as_str(), doc.instance_id.as_str()),
        ("111122223333", "i-0abc")
    );
    let azure_der = read("azure-attested.der");
    let created = azure::timestamp_seconds("01/15/27 08:00:00 -0000").unwrap();
    let attested = azure::verify(&b64(&azure_der), &trust.azure, created + 5).unwrap();
    assert_eq!(attested.nonce, NONCE);
    assert_eq!(attested.vm_id, VM);

    // The signature is the last bytes of both (one signer, no unsigned attributes).
    for (name, der) in [("aws", aws_der), ("azure", azure_der)] {
        let mut flipped = der.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let refusal = match name {
            "aws" => aws::verify_rsa2048(&b64(&flipped), &trust.aws_rsa2048).unwrap_err(),
            _ => azure::verify(&b64(&flipped), &trust.azure, created + 5).unwrap_err(),
        };
        assert_eq!(refusal.code, RefusalCode::BadProof, "{name}: {refusal}");
        assert!(
            refusal.reason.contains("does not verify"),
            "{name}: {refusal}"
        );
    }
}

//! User-data against the newest cloud-config schema and Debian's `cloud-init schema -c`.

use std::io::Write as _;

use xtask::cloudinit::{check_with_cloud_init, validate_user_data};

fn require_cloud_init() {
    assert!(
        xtask::cloudinit::cloud_init_installed(),
        "`cloud-init` is needed by this test and is not on PATH: apt-get install cloud-init"
    );
}

const VALID: &str = r#"#cloud-config
bootcmd:
  - [mkdir, -p, /var/run/secrets/tokens]
write_files:
  - path: /etc/certs/root-cert.pem
    encoding: b64
    content: aGVsbG8K
    owner: root:root
    permissions: '0644'
  - path: /var/lib/istio/envoy/cluster.env
    content: |
      ISTIO_NAMESPACE='istio-system'
    permissions: '0644'
    defer: true
runcmd:
  - |
    set -e
    echo installing
"#;

#[test]
fn accepts_a_valid_document_plain_and_gzipped() {
    require_cloud_init();
    assert_eq!(validate_user_data(VALID), Ok(()));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(VALID.as_bytes()).unwrap();
    assert_eq!(validate_user_data(gz.finish().unwrap()), Ok(()));
}

#[test]
fn rejects_what_cloud_init_would_misread() {
    require_cloud_init();
    // (document, a part of each expected error, in order)
    let cases: &[(&str, &[&str])] = &[
        (
            "runcmd: [ls]\n",
            &[
                "the first line must be `#cloud-config`",
                "needs to begin with \"#cloud-config\"",
            ],
        ),
        (
            // The newest schema rejects unknown top-level keys; cloud-init 22.4 accepts them.
            "#cloud-config\nruncmd: [ls]\nrun_cmd: [ls]\n",
            &["(root): Additional properties are not allowed ('run_cmd' was unexpected)"],
        ),
        (
            // YAML 1.1 reads an unquoted 0644 as the number 420.
            "#cloud-config\nwrite_files:\n  - path: /x\n    content: hi\n    permissions: 0644\n",
            &[
                "/write_files/0/permissions: 420 is not of type \"string\"",
                "cloud-init schema -c: Cloud config schema errors: write_files.0.permissions: 420 is not of type 'string'",
            ],
        ),
        (
            "#cloud-config\nruncmd: [ls]\nruncmd: [pwd]\n",
            &["YAML: line 3 column 1: duplicate mapping key: runcmd"],
        ),
        (
            "#cloud-config\n- ls\n",
            &[
                "cloud-config must be a mapping",
                "cloud-init schema -c: Cloud-config is not a YAML dict.",
            ],
        ),
        (
            "#cloud-config\nruncmd: 5\n",
            &[
                "/runcmd: 5 is not of type \"array\"",
                "cloud-init schema -c: ",
            ],
        ),
    ];
    for (doc, want) in cases {
        let errors = validate_user_data(doc).expect_err(doc);
        assert_eq!(errors.len(), want.len(), "{doc}: {errors:#?}");
        for (error, part) in errors.iter().zip(want.iter()) {
            assert!(
                error.contains(part),
                "{doc}: {error:?} should contain {part:?}"
            );
        }
    }
}

#[test]
fn runs_cloud_init_schema_when_installed() {
    require_cloud_init();
    assert_eq!(check_with_cloud_init(VALID), None);
    let problem = check_with_cloud_init("#cloud-config\nruncmd: 5\n").unwrap();
    assert_eq!(
        problem,
        "cloud-init schema -c: Cloud config schema errors: runcmd: 5 is not of type 'array'"
    );
}

//! Data-driven tests of Migration parsing and validation: each case is a YAML document and the
//! expected problems as `line:column path: message fragment`.

use theseus_model::spec::{
    ManualApproval, MaxUnavailable, Migration, OperationKind, ProviderType, SpecDuration,
    StrategyType,
};

/// Parses `yaml` and compares the problems with `expect`, one `line:col path: fragment` per line.
#[track_caller]
fn check(yaml: &str, expect: &[&str]) {
    let err = match Migration::from_yaml(yaml) {
        Ok(m) => panic!("expected problems {expect:?}, but the spec parsed: {m:#?}"),
        Err(e) => e,
    };
    let got: Vec<String> = err
        .errors
        .iter()
        .map(|e| {
            format!(
                "{}:{} {}: {}",
                e.line.unwrap_or(0),
                e.column.unwrap_or(0),
                e.path,
                e.message
            )
        })
        .collect();
    assert_eq!(
        got.len(),
        expect.len(),
        "problems: {got:#?}\nexpected: {expect:#?}"
    );
    for (g, e) in got.iter().zip(expect) {
        let (pos_path, fragment) = e.split_once(": ").unwrap_or((e, ""));
        assert!(
            g.starts_with(&format!("{pos_path}: ")) && g.contains(fragment),
            "got {g:?}, expected {e:?}"
        );
    }
}

const HEAD: &str =
    "apiVersion: theseus.io/v1alpha1\nkind: Migration\nmetadata:\n  name: m\nspec:\n";

fn with_spec(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn minimal_spec_gets_the_defaults_a_platform_engineer_expects() {
    let m = Migration::from_yaml(&with_spec(
        "  operation:\n    osMigration:\n      targetOsImage: Ubuntu 22.04.4 LTS\n",
    ))
    .unwrap();
    let s = &m.spec;
    assert_eq!(s.operation.kind(), Some(OperationKind::OsMigration));
    assert_eq!(s.strategy.kind, StrategyType::RemoveBeforeAdd);
    assert_eq!(s.strategy.max_unavailable, MaxUnavailable::Auto);
    assert_eq!(s.strategy.max_wave_size(100), 20);
    assert!(!s.strategy.zone_by_zone);
    assert!(s.strategy.protect_unbudgeted);
    assert!(s.drain.ignore_daemon_sets);
    assert!(!s.drain.delete_empty_dir_data);
    assert!(!s.drain.force);
    assert_eq!(s.drain.grace_period_seconds, -1);
    assert_eq!(s.drain.timeout, SpecDuration(900));
    assert!(s.surge.single_replica_deployments);
    assert!(s.gates.node_ready && s.gates.pods_ready && s.gates.no_pending_pods);
    assert_eq!(s.gates.soak, SpecDuration(30));
    assert_eq!(s.gates.manual_approval, ManualApproval::Never);
    assert_eq!(s.timeouts.node_action, SpecDuration(1800));
    assert!(s.provider.is_none());
    assert!(s.nodes.names.is_none() && s.nodes.selector.is_none());
}

#[test]
fn full_spec_parses_and_round_trips() {
    let yaml = r#"
apiVersion: theseus.io/v1alpha1
kind: Migration
metadata:
  name: centos-to-ubuntu
  description: runbook 000
spec:
  operation:
    osMigration:
      targetOsImage: Ubuntu 22.04.4 LTS
      targetKernelVersion: 5.15.0-105-generic
  nodes:
    selector:
      matchLabels: {kubernetes.io/os: linux}
      matchExpressions:
      - {key: pool, operator: In, values: [a, b]}
    roles: [control-plane, worker]
    exclude: [spare-1]
  strategy:
    type: removeBeforeAdd
    maxUnavailable: auto
    maxUnavailableCap: 25%
    zoneByZone: true
    protectUnbudgeted: false
  drain:
    ignoreDaemonSets: true
    deleteEmptyDirData: true
    force: false
    gracePeriodSeconds: 60
    timeout: 20m
    skipWaitForDeleteTimeoutSeconds: 30
    disableEviction: false
    podSelector: app!=batch
  surge:
    singleReplicaDeployments: true
  gates:
    nodeReady: true
    podsReady: true
    noPendingPods: true
    probes: true
    soak: 1m
    manualApproval: controlPlane
  probes:
  - name: storefront
    http: {url: "http://10.6.212.100:8080/healthz", expectStatus: 200}
    interval: 1s
  - name: redis
    tcp: {address: "10.6.212.101:6379"}
  - name: checkout
    service: {namespace: shop, name: checkout, port: 8080}
    failureThreshold: 1
  timeouts:
    nodeAction: 45m
    nodeReady: 15m
    podsReady: 10m
    wave: 2h
  provider:
    type: kubean
    expectedActionDuration: 25m
    kubean: {cluster: centos}
  maintenanceWindow:
    start: "22:00"
    end: "06:00"
    timezone: Asia/Shanghai
    days: [Sat, Sun]
"#;
    let m = Migration::from_yaml(yaml).unwrap();
    assert_eq!(
        m.spec.strategy.max_unavailable_cap,
        Some(MaxUnavailable::Percent(25))
    );
    assert_eq!(m.spec.drain.timeout, SpecDuration(1200));
    assert_eq!(m.spec.provider.as_ref().unwrap().kind, ProviderType::Kubean);
    assert_eq!(
        m.spec
            .provider
            .as_ref()
            .unwrap()
            .kubean
            .as_ref()
            .unwrap()
            .namespace,
        "kubean-system"
    );
    assert_eq!(
        m.spec.maintenance_window.as_ref().unwrap().length_seconds(),
        8 * 3600
    );
    assert_eq!(m.spec.probes.len(), 3);
    let again = Migration::from_yaml(&m.to_yaml().unwrap()).unwrap();
    assert_eq!(again, m);
}

#[test]
fn upgrade_and_maintenance_specs() {
    let m = Migration::from_yaml(&with_spec(
        "  operation:\n    upgrade:\n      targetVersion: v1.13\n      path: [v1.12.10]\n  strategy: {maxUnavailable: 1}\n",
    ))
    .unwrap();
    let up = m.spec.operation.upgrade.as_ref().unwrap();
    assert_eq!(up.target_version.to_string(), "v1.13");
    assert_eq!(up.path[0].to_string(), "v1.12.10");
    assert_eq!(m.spec.strategy.max_unavailable, MaxUnavailable::Count(1));
    let m = Migration::from_yaml(&with_spec(
        "  operation: {maintenance: {action: reboot}}\n  strategy: {maxUnavailable: 10%}\n",
    ))
    .unwrap();
    assert_eq!(
        m.spec.operation.maintenance.as_ref().unwrap().action,
        "reboot"
    );
    assert_eq!(m.spec.strategy.max_unavailable, MaxUnavailable::Percent(10));
}

#[test]
fn semantic_errors_name_field_line_and_column() {
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailable: \"120%\"\n",
        ),
        &["9:5 spec.strategy.maxUnavailable: more than 100%"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailable: 0\n",
        ),
        &["9:5 spec.strategy.maxUnavailable: at least 1"],
    );
    check(
        &with_spec("  operation: {}\n"),
        &["6:3 spec.operation: no operation given"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n    maintenance: {action: reboot}\n",
        ),
        &["8:5 spec.operation.maintenance: only one operation"],
    );
    check(
        &with_spec("  operation:\n    osMigration: {targetOsImage: u}\n  nodes:\n    names: []\n"),
        &["9:5 spec.nodes.names: no node would be selected"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  nodes:\n    names: [a, b, a]\n",
        ),
        &["9:19 spec.nodes.names[2]: listed twice"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: \"\"}\n  drain:\n    timeout: 0s\n    gracePeriodSeconds: -5\n",
        ),
        &[
            "7:19 spec.operation.osMigration.targetOsImage: must not be empty",
            "9:5 spec.drain.timeout: never waits",
            "10:5 spec.drain.gracePeriodSeconds: -1",
        ],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailable: 2\n    maxUnavailableCap: 5\n",
        ),
        &["10:5 spec.strategy.maxUnavailableCap: only applies to maxUnavailable: auto"],
    );
    check(
        &with_spec("  operation:\n    upgrade: {targetVersion: v1.14, path: [v1.12.1, v1.12.3]}\n"),
        &[
            "7:37 spec.operation.upgrade.path: more than one minor before the target",
            "7:53 spec.operation.upgrade.path[1]: exactly one minor",
        ],
    );
    check(
        &with_spec(
            "  operation: {maintenance: {action: reboot}}\n  provider:\n    type: ssh\n    command: {run: [x]}\n",
        ),
        &[
            "8:5 spec.provider.type: `ssh` settings block is required",
            "9:5 spec.provider.command: provider type is ssh",
        ],
    );
    check(
        &with_spec(
            "  operation: {maintenance: {action: reboot}}\n  probes:\n  - name: a\n    tcp: {address: x:1}\n  - name: a\n",
        ),
        &[
            "10:5 spec.probes[1].name: used by another probe",
            "10:5 spec.probes[1]: exactly one of http, tcp, service",
        ],
    );
    check(
        &with_spec(
            "  operation: {maintenance: {action: reboot}}\n  probes:\n  - name: a\n    http:\n      url: http://x/\n      caFile: /ca.pem\n  - name: b\n    http:\n      url: https://x/\n      caFile: /ca.pem\n      insecureSkipTlsVerify: true\n",
        ),
        &[
            "11:7 spec.probes[0].http.caFile: only applies to an https:// URL",
            "16:7 spec.probes[1].http.insecureSkipTlsVerify: either caFile or insecureSkipTlsVerify",
        ],
    );
    check(
        "apiVersion: theseus.io/v2\nkind: Migrashun\nmetadata: {name: Bad_Name}\nspec:\n  operation: {maintenance: {action: reboot}}\n",
        &[
            "1:1 apiVersion: must be \"theseus.io/v1alpha1\"",
            "2:1 kind: must be \"Migration\"",
            "3:12 metadata.name: not a valid name",
        ],
    );
}

#[test]
fn serde_errors_name_field_line_and_column() {
    check(
        &with_spec("  operation:\n    reboot: {}\n"),
        &["7:5 spec.operation.reboot: unknown field `reboot`, expected one of `osMigration`"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailble: 1\n",
        ),
        &["9:5 spec.strategy.maxUnavailble: unknown field `maxUnavailble`"],
    );
    check(
        &with_spec(
            "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailable: lots\n",
        ),
        &["9:21 spec.strategy.maxUnavailable: invalid value \"lots\""],
    );
    check(
        &with_spec("  operation:\n    upgrade: {targetVersion: latest}\n"),
        &["7:30 spec.operation.upgrade.targetVersion: invalid Kubernetes version"],
    );
    check(
        &with_spec("  operation:\n    upgrade: {targetVersion: 1.13}\n"),
        &["7:30 spec.operation.upgrade.targetVersion: quote it"],
    );
    check(
        &with_spec(
            "  operation:\n    maintenance: {action: reboot}\n  drain:\n    timeout: soon\n",
        ),
        &["9:14 spec.drain.timeout: invalid duration"],
    );
    check(
        &with_spec("  nodes: {names: [a]}\n"),
        &["6:3 spec: missing field `operation`"],
    );
    check(
        &with_spec(
            "  operation:\n    maintenance: {action: reboot}\n  strategy:\n    type: blueGreen\n",
        ),
        &["9:11 spec.strategy.type: unknown variant `blueGreen`"],
    );
    check(
        &with_spec(
            "  operation:\n    maintenance: {action: reboot}\n  maintenanceWindow: {start: \"25:00\", end: \"06:00\"}\n",
        ),
        &["8:30 spec.maintenanceWindow.start: invalid time"],
    );
    check("", &["0:0 : the spec is empty"]);
    check(
        "apiVersion: \"unterminated\n",
        &[
            "2:1 : found unexpected end of stream, while scanning a quoted scalar at line 1 column 13",
        ],
    );
}

#[test]
fn error_display_is_fit_for_users() {
    let err = Migration::from_yaml(&with_spec(
        "  operation:\n    osMigration: {targetOsImage: u}\n  strategy:\n    maxUnavailable: \"120%\"\n",
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("invalid Migration spec (1 problem):"),
        "{text}"
    );
    assert!(
        text.contains("line 9, column 5: spec.strategy.maxUnavailable: \"120%\" is more than 100%"),
        "{text}"
    );
    assert_eq!(
        err.render("migration.yaml"),
        "migration.yaml:9:5: spec.strategy.maxUnavailable: \"120%\" is more than 100%: use a percentage from 1% to 100%\n"
    );
}

#[test]
fn validate_without_source_has_paths_only() {
    let mut m =
        Migration::from_yaml(&with_spec("  operation: {maintenance: {action: reboot}}\n")).unwrap();
    assert!(m.validate().is_ok());
    m.spec.strategy.max_unavailable = MaxUnavailable::Percent(150);
    let err = m.validate().unwrap_err();
    assert_eq!(err.errors[0].path, "spec.strategy.maxUnavailable");
    assert_eq!(err.errors[0].line, None);
}

#[test]
fn the_documented_example_is_a_valid_spec() {
    let doc = include_str!("../docs/migration-spec.md");
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let m = Migration::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.metadata.name, "centos-to-ubuntu");
    assert_eq!(
        m.spec.nodes.roles.as_deref(),
        Some(&["worker".to_string()][..])
    );
}

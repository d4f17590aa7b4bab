//! `capstan images import / ls / rm` through the built binary, over the archives
//! scripts/build-test-images makes from Debian's busybox-static.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use capstan_e2e::capstan_bin;

fn test_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = std::env::var_os("CAPSTAN_TEST_IMAGES")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target/test-images"));
        let status = Command::new(workspace.join("scripts/build-test-images"))
            .arg(&dir)
            .status()
            .expect("run scripts/build-test-images");
        assert!(status.success(), "scripts/build-test-images failed");
        dir
    })
}

fn images(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(capstan_bin())
        .arg("images")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("CAPSTAN_LOG", "warn")
        .output()
        .expect("run capstan images")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "capstan images failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn import_ls_rm_through_the_binary() {
    let data = tempfile::tempdir().unwrap();
    let busybox = test_images().join("busybox.tar");
    let oci = test_images().join("busybox-oci.tar");
    let layered = test_images().join("layered.tar");

    let out = images(
        data.path(),
        &[
            "import",
            busybox.to_str().unwrap(),
            oci.to_str().unwrap(),
            layered.to_str().unwrap(),
        ],
    );
    assert_eq!(
        stdout(&out),
        "docker.io/library/busybox:latest\ncapstan.test/busybox-oci:1.0\ncapstan.test/layered:1.0\n"
    );
    assert!(data.path().join("agent/image-store/index.json").is_file());

    let table = stdout(&images(data.path(), &["ls"]));
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"], "{table}");
    assert_eq!(lines.len(), 4, "{table}");
    let row = |repo: &str| {
        lines
            .iter()
            .find(|l| l[0] == repo)
            .unwrap_or_else(|| panic!("{repo} missing from\n{table}"))
            .clone()
    };
    let docker = row("docker.io/library/busybox");
    assert_eq!(docker[1], "latest");
    assert_eq!(docker[2].len(), 12);
    assert!(docker[2].bytes().all(|b| b.is_ascii_hexdigit()));
    let oci_row = row("capstan.test/busybox-oci");
    assert_eq!(oci_row[1], "1.0");
    // Same config: one image under two names (its size is that of its first manifest by
    // name, the OCI archive's gzip'd layer).
    assert_eq!(oci_row[2], docker[2]);
    assert_eq!(oci_row[3], docker[3]);
    assert_eq!(docker[3], "1.04MB");
    let layered = row("capstan.test/layered");
    assert_eq!(layered[1], "1.0");
    assert_eq!(layered[3], "2.14MB", "two uncompressed layer.tar files");

    assert_eq!(
        stdout(&images(data.path(), &["rm", "busybox"])),
        "Deleted: busybox\n"
    );
    let table = stdout(&images(data.path(), &["ls"]));
    assert!(!table.contains("docker.io/library/busybox"), "{table}");
    assert!(table.contains("capstan.test/busybox-oci"), "{table}");
    // Without the docker-save name, its uncompressed layer blob went: only the gzip'd one
    // is left besides the layered image's.
    let blobs = std::fs::read_dir(data.path().join("agent/image-store/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(
        blobs,
        3 + 4,
        "busybox-oci: manifest, config, layer; layered: 4"
    );

    let out = images(data.path(), &["rm", "busybox"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("busybox") && err.contains("not present"),
        "{err}"
    );

    let out = images(
        data.path(),
        &[
            "rm",
            "capstan.test/busybox-oci:1.0",
            "capstan.test/layered:1.0",
        ],
    );
    assert_eq!(
        stdout(&out),
        "Deleted: capstan.test/busybox-oci:1.0\nDeleted: capstan.test/layered:1.0\n"
    );
    assert_eq!(stdout(&images(data.path(), &["ls"])).lines().count(), 1);
}

#[test]
fn importing_something_else_fails_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let bogus = data.path().join("bogus.tar");
    std::fs::write(&bogus, b"this is not a tar archive at all").unwrap();
    let out = images(data.path(), &["import", bogus.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus.tar"), "{err}");
}

/// The names in the Node's `status.images`.
fn node_image_names(s: &capstan_e2e::Server) -> Option<Vec<(String, u64)>> {
    let nodes = capstan_e2e::get_json(s, &["nodes"])?;
    let images = nodes["items"][0]["status"]["images"].as_array()?.clone();
    Some(
        images
            .iter()
            .flat_map(|i| {
                let size = i["sizeBytes"].as_u64().unwrap_or(0);
                i["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str())
                    .map(move |n| (n.to_string(), size))
            })
            .collect(),
    )
}

#[test]
fn the_node_reports_its_images_and_an_import_while_it_runs() {
    let s = capstan_e2e::Server::start_node(&[]);
    let names = capstan_e2e::wait_for(
        "the node to report the busybox image",
        std::time::Duration::from_secs(30),
        || {
            let names = node_image_names(&s)?;
            names
                .iter()
                .any(|(n, _)| n == "docker.io/library/busybox:latest")
                .then_some(names)
        },
    );
    let (_, size) = names
        .iter()
        .find(|(n, _)| n == "docker.io/library/busybox:latest")
        .expect("busybox listed");
    assert!(*size > 500_000, "sizeBytes {size}");
    assert!(
        names
            .iter()
            .any(|(n, _)| n.starts_with("docker.io/library/busybox@sha256:")),
        "the repo digest is listed too: {names:?}"
    );

    let layered = test_images().join("layered.tar");
    stdout(&images(&s.data_dir, &["import", layered.to_str().unwrap()]));
    // The agent lists its store every status period (10 s) and posts a changed list.
    capstan_e2e::wait_for(
        "the imported image on the node",
        std::time::Duration::from_secs(30),
        || {
            node_image_names(&s)?
                .iter()
                .any(|(n, _)| n == "capstan.test/layered:1.0")
                .then_some(())
        },
    );
}

#[test]
fn a_pod_runs_an_image_pulled_from_a_registry_with_its_pull_secret() {
    let registry = capstan_e2e::registry::Registry::start_with_auth(true);
    registry.push(
        &capstan_e2e::registry::Registry::docker_archive(&test_images().join("busybox.tar")),
        "private/busybox:1",
    );
    let s = capstan_e2e::Server::start_node(&[]);
    let host = registry.host();
    s.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={host}"),
        &format!("--docker-username={}", capstan_e2e::registry::USER),
        &format!("--docker-password={}", capstan_e2e::registry::PASSWORD),
    ]);
    let image = format!("{host}/private/busybox:1");
    let pod = |name: &str, secret: bool| {
        let secrets = if secret {
            "\n  imagePullSecrets: [{name: regcred}]"
        } else {
            ""
        };
        capstan_e2e::apply(
            &s,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never{secrets}\n  containers:\n  - {{name: c, image: \"{image}\", imagePullPolicy: Always, command: [echo, pulled]}}\n"
            ),
        );
    };
    pod("pulled", true);
    pod("refused", false);
    let p = capstan_e2e::wait_for(
        "the pod with the secret to pull and finish",
        std::time::Duration::from_secs(90),
        || {
            let p = capstan_e2e::get_json(&s, &["pod", "pulled"])?;
            (p["status"]["phase"] == "Succeeded").then_some(p)
        },
    );
    assert_eq!(s.kubectl_ok(&["logs", "pulled"]), "pulled\n");
    let c = &p["status"]["containerStatuses"][0];
    assert!(
        c["imageID"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{host}/private/busybox@sha256:"))),
        "{c}"
    );
    let events = s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pulled",
    ]);
    assert!(events.contains("Pulling"), "{events}");
    assert!(events.contains("Successfully pulled image"), "{events}");
    // Without the secret the registry refuses: the pull fails and backs off (`Always`: with
    // `IfNotPresent` the image the first pod pulled would run, as upstream's kubelet does).
    wait_for_pull_failure(&s, "refused", &image);
}

#[test]
fn always_asks_the_registry_again_and_follows_a_moved_tag() {
    let registry = capstan_e2e::registry::Registry::start();
    let busybox =
        capstan_e2e::registry::Registry::docker_archive(&test_images().join("busybox.tar"));
    let layered =
        capstan_e2e::registry::Registry::docker_archive(&test_images().join("layered.tar"));
    registry.push(&busybox, "moving/tool:latest");
    let s = capstan_e2e::Server::start_node(&[]);
    let image = format!("{}/moving/tool:latest", registry.host());
    // Prints /etc/added.txt: only the layered image has it.
    let pod = |name: &str, policy: &str| {
        capstan_e2e::apply(
            &s,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: \"{image}\", imagePullPolicy: {policy}, command: [sh, -c, 'cat /etc/added.txt 2>/dev/null || echo plain']}}\n"
            ),
        );
    };
    let finished = |name: &str| {
        let p = capstan_e2e::wait_for(
            &format!("pod {name} to finish"),
            std::time::Duration::from_secs(90),
            || {
                let p = capstan_e2e::get_json(&s, &["pod", name])?;
                (p["status"]["phase"] == "Succeeded").then_some(p)
            },
        );
        let id = p["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (s.kubectl_ok(&["logs", name]), id)
    };
    let events_of = |name: &str| {
        s.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ])
    };
    pod("first", "Always");
    let (out, first_id) = finished("first");
    assert_eq!(out, "plain\n");
    // The tag moves in the registry: Always pulls the new image although one is present.
    registry.push(&layered, "moving/tool:latest");
    pod("second", "Always");
    let (out, second_id) = finished("second");
    assert_eq!(out, "added by the upper layer\n");
    assert_ne!(first_id, second_id);
    let events = events_of("second");
    assert!(events.contains("Successfully pulled image"), "{events}");
    // IfNotPresent uses what the node has, without asking.
    pod("third", "IfNotPresent");
    let (out, third_id) = finished("third");
    assert_eq!(out, "added by the upper layer\n");
    assert_eq!(third_id, second_id);
    let events = events_of("third");
    assert!(events.contains("already present on machine"), "{events}");
    // With the registry gone, Always cannot confirm the tag: the pull fails, as upstream.
    drop(registry);
    pod("fourth", "Always");
    wait_for_pull_failure(&s, "fourth", &image);
    // An imported image (the node's air-gap images) runs under Always without a registry.
    capstan_e2e::apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: imported}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: c, image: busybox, imagePullPolicy: Always, command: [echo, local]}\n",
    );
    let (out, _) = finished("imported");
    assert_eq!(out, "local\n");
    let events = events_of("imported");
    assert!(events.contains("already present on machine"), "{events}");
}

#[test]
fn removing_an_image_keeps_the_layers_its_running_container_uses() {
    let s = capstan_e2e::Server::start_node(&[]);
    let layered = test_images().join("layered.tar");
    stdout(&images(&s.data_dir, &["import", layered.to_str().unwrap()]));
    capstan_e2e::apply(
        &s,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\nspec:\n  containers:\n  - {name: c, image: capstan.test/layered:1.0, command: [sh, -c, 'while true; do cat /etc/added.txt; sleep 0.3; done']}\n",
    );
    let logs = || s.kubectl(&["logs", "user", "--tail=1"]);
    capstan_e2e::wait_for(
        "the pod to print its file",
        std::time::Duration::from_secs(60),
        || (stdout_lossy(&logs()) == "added by the upper layer\n").then_some(()),
    );
    let layers_dir = s.data_dir.join("agent/image-store/layers");
    let count_layers = || std::fs::read_dir(&layers_dir).map_or(0, |d| d.count());
    let before = count_layers();
    // The name goes; the layers under the running container stay.
    stdout(&images(&s.data_dir, &["rm", "capstan.test/layered:1.0"]));
    let listed = stdout(&images(&s.data_dir, &["ls"]));
    assert!(!listed.contains("capstan.test/layered"), "{listed}");
    assert_eq!(count_layers(), before, "layers in use were collected");
    // The container still reads its files: new lines keep coming from the same rootfs.
    let since = s.kubectl_ok(&["logs", "user"]).lines().count();
    capstan_e2e::wait_for(
        "the pod to go on printing its file",
        std::time::Duration::from_secs(30),
        || {
            let all = s.kubectl_ok(&["logs", "user"]);
            let lines: Vec<&str> = all.lines().collect();
            (lines.len() > since + 3).then_some(())
        },
    );
    let all = s.kubectl_ok(&["logs", "user"]);
    assert!(
        all.lines().all(|l| l == "added by the upper layer"),
        "{all}"
    );
    // Once the container is gone, the next collection (any import) frees its layers.
    s.kubectl_ok(&["delete", "pod", "user", "--grace-period=1"]);
    let busybox = test_images().join("busybox.tar");
    capstan_e2e::wait_for(
        "the unused layers to be collected",
        std::time::Duration::from_secs(60),
        || {
            stdout(&images(&s.data_dir, &["import", busybox.to_str().unwrap()]));
            (count_layers() < before).then_some(())
        },
    );
}

fn stdout_lossy(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits for the pod's first container to show a failed pull naming `image`.
fn wait_for_pull_failure(s: &capstan_e2e::Server, pod: &str, image: &str) {
    let waiting = capstan_e2e::wait_for(
        &format!("pod {pod} to fail its pull"),
        std::time::Duration::from_secs(60),
        || {
            let p = capstan_e2e::get_json(s, &["pod", pod])?;
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            matches!(
                w["reason"].as_str(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
            .then_some(w)
        },
    );
    assert!(
        waiting["message"]
            .as_str()
            .is_some_and(|m| m.contains(image)),
        "{waiting}"
    );
}

//! The images of `deploy/image/build.sh` (FROM scratch, no registry) and
//! the multi-stage `deploy/Dockerfile` for users with a registry must be
//! the same image: the same files (both come from `deploy/image/rootfs.sh`,
//! with `/data` owned by uid 10001) and the same settings (user, workdir,
//! ports, environment, entrypoint, command). The Dockerfile cannot be
//! built here (its build stage pulls `rust:1-bookworm`), so its final stage
//! is read and compared with what `docker image inspect` says of the built
//! image, and the built image is run.

use crate::support::compose::{flotilla_image, images, nats_image, repo_root, run, run_ok};
use serde_json::Value;
use std::collections::BTreeMap;

/// The settings lines of a Dockerfile's last stage, by instruction.
fn final_stage(path: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    let stage = text
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a FROM line");
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in stage.lines().skip(1) {
        if let Some((instruction, rest)) = line.split_once(' ') {
            if instruction.chars().all(|c| c.is_ascii_uppercase()) {
                settings
                    .entry(instruction.into())
                    .or_default()
                    .push(rest.trim().into());
            }
        }
    }
    settings
}

fn inspect(image: &str) -> Value {
    let out = run_ok("docker", &["image", "inspect", image], &[]);
    serde_json::from_str::<Value>(&out).unwrap()[0]["Config"].clone()
}

/// `path owner mode` of every entry of the image's filesystem.
fn files(image: &str) -> BTreeMap<String, (String, String)> {
    let id = run_ok("docker", &["create", image], &[]).trim().to_string();
    let tar = run("docker", &["export", &id], &[]);
    run_ok("docker", &["rm", &id], &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.tar");
    std::fs::write(&path, tar.stdout).unwrap();
    let listing = run_ok(
        "tar",
        &["--numeric-owner", "-tvf", path.to_str().unwrap()],
        &[],
    );
    listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let name = fields
                .get(5)?
                .trim_end_matches('/')
                .trim_start_matches("./");
            Some((
                format!("/{name}"),
                (fields[1].to_string(), fields[0].to_string()),
            ))
        })
        .collect()
}

/// The JSON-array form of an ENTRYPOINT or CMD line.
fn exec_form(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: not the exec form: {e}"))
}

/// The image's settings as the Dockerfile's final stage states them.
fn assert_settings_match(image: &str, dockerfile: &str) {
    let stage = final_stage(dockerfile);
    let config = inspect(image);
    assert_eq!(
        config["User"], stage["USER"][0],
        "{image} vs {dockerfile}: USER"
    );
    assert_eq!(
        config["WorkingDir"], stage["WORKDIR"][0],
        "{image}: WORKDIR"
    );
    assert_eq!(
        config["Entrypoint"],
        exec_form(&stage["ENTRYPOINT"][0]),
        "{image}: ENTRYPOINT"
    );
    assert_eq!(config["Cmd"], exec_form(&stage["CMD"][0]), "{image}: CMD");
    let mut ports: Vec<String> = config["ExposedPorts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    ports.sort();
    let mut stated: Vec<String> = stage["EXPOSE"]
        .iter()
        .flat_map(|l| l.split_whitespace().map(|p| format!("{p}/tcp")))
        .collect();
    stated.sort();
    assert_eq!(ports, stated, "{image}: EXPOSE");
    let env: Vec<&str> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for line in stage.get("ENV").into_iter().flatten() {
        assert!(
            env.contains(&line.as_str()),
            "{image}: ENV {line} missing from {env:?}"
        );
    }
    // The files are the Dockerfile's, too: one rootfs copied whole, the
    // data directory given to the image's user.
    let copies = &stage["COPY"];
    assert!(
        copies.iter().any(|c| c.ends_with("rootfs/ /")),
        "{dockerfile}: {copies:?}"
    );
    assert!(
        copies
            .iter()
            .any(|c| c.contains("--chown=10001:10001") && c.ends_with("/data /data")),
        "{dockerfile}: {copies:?}"
    );
}

#[test]
fn the_flotilla_image_is_the_dockerfiles_and_runs_from_scratch() {
    eprintln!("{}", images());
    let image = flotilla_image();
    assert_settings_match(&image, "deploy/Dockerfile");
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("sh deploy/image/rootfs.sh /rootfs flotilla target/release/flotilla"),
        "the Dockerfile's build stage must assemble its files with rootfs.sh"
    );

    let files = files(&image);
    for (path, owner) in [
        ("/usr/local/bin/flotilla", "0/0"),
        ("/bin/sh", "0/0"),
        ("/bin/mv", "0/0"),
        ("/etc/ssl/certs/ca-certificates.crt", "0/0"),
        ("/etc/passwd", "0/0"),
        ("/data", "10001/10001"),
    ] {
        let (found, _) = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in {image}: {files:?}"));
        assert_eq!(found, owner, "{path}");
    }
    assert_eq!(files["/tmp"].1, "drwxrwxrwt", "/tmp");
    // Nothing of a distribution but the two programs the executor needs
    // and the libraries the binaries link.
    for path in files.keys() {
        let allowed = [
            "/usr/local/bin",
            "/bin/sh",
            "/bin/mv",
            "/etc",
            "/lib",
            "/lib64",
            "/usr/lib",
            "/data",
            "/tmp",
            "/usr/local",
            "/usr",
            "/bin",
            "/proc",
            "/sys",
            "/dev",
            "/.dockerenv",
        ]
        .iter()
        .any(|p| path == p || path.starts_with(&format!("{p}/")));
        assert!(allowed, "{path} should not be in the image");
    }
    let passwd = run_ok(
        "docker",
        &[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            &image,
            "-c",
            "while IFS= read -r l; do echo \"$l\"; done < /etc/passwd",
        ],
        &[],
    );
    assert!(passwd.contains("flotilla:x:10001:10001:"), "{passwd}");

    // The binary runs with only what the image holds, as uid 10001.
    let version = run_ok(
        "docker",
        &["run", "--rm", "--network", "none", &image, "--version"],
        &[],
    );
    assert!(version.starts_with("flotilla "), "{version}");
    // The health check of a scratch image: 1 when nothing answers.
    let probe = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &image,
            "probe",
            "http://127.0.0.1:9/readyz",
        ],
        &[],
    );
    assert_eq!(
        probe.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert!(String::from_utf8_lossy(&probe.stderr).contains("probe: http://127.0.0.1:9/readyz"));
}

#[test]
fn the_nats_image_runs_the_static_server_from_scratch() {
    images();
    let image = nats_image();
    assert_settings_match(&image, "deploy/image/nats-server.Dockerfile");
    let version = run_ok(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/usr/local/bin/nats-server",
            &image,
            "--version",
        ],
        &[],
    );
    assert!(version.contains("nats-server: v2."), "{version}");
    let files = files(&image);
    assert!(
        !files.contains_key("/bin/sh"),
        "the NATS image needs no shell"
    );
    assert_eq!(files["/data"].0, "10001/10001");
}

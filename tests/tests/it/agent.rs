//! The uvm programs as qrexec agents (`--qrexec-agent`), driven end to end over the Unix-socket
//! vchan layout by the test-only dom0 and caller peer of the `qrexec` crate: a real PDF and a
//! real image converted, and a failing document whose one error line arrives as DATA_STDERR.
//!
//! The pixels that come back through the agent must equal, byte for byte, what the same
//! program writes when it serves the call on plain stdin and stdout.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;

use crate::util::{corpus, program};

#[path = "../../../qrexec-services/qrexec/tests/dom0_peer/mod.rs"]
mod dom0_peer;

use dom0_peer::{
    collect, exec_params, send_stdin, Caller, Daemon, Received, CONNECTION_TERMINATED, EXEC_CMDLINE,
};

/// The agent's domain id, as a qrexec daemon would give it.
const AGENT_DOMAIN: u32 = 7;
/// The calling VM's domain id.
const CALLER_DOMAIN: u32 = 3;
/// The data vchan's port, as dom0 would allocate it.
const DATA_PORT: u32 = 514;
/// DATA_STDIN chunk sizes to cycle through: full chunks and odd small ones.
const CHUNKS: &[usize] = &[65536, 1, 4000, 65536, 777];

/// What one call through an agent gave: the data vchan's messages, the control vchan's
/// CONNECTION_TERMINATED payload, and the agent process's own exit and stderr.
struct AgentCall {
    data: Received,
    terminated: Vec<u8>,
    process: Output,
}

fn spawn_agent(name: &str, socket_dir: &Path) -> Child {
    Command::new(program(name))
        .arg("--qrexec-agent")
        .env_clear()
        .env("VCHAN_DOMAIN", AGENT_DOMAIN.to_string())
        .env("VCHAN_SOCKET_DIR", socket_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent")
}

/// Runs one call of `cmdline` with `input` as the caller's stdin through agent `name`; with
/// no input, the caller sends nothing (the agent must not wait for it).
fn call(name: &str, cmdline: &str, input: Option<Vec<u8>>) -> AgentCall {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_agent(name, dir.path());
    let mut daemon = Daemon::connect(dir.path(), AGENT_DOMAIN, 4);
    assert_eq!(daemon.agent_version, 4, "the agent announces protocol 4");
    let caller = Caller::offer(dir.path(), CALLER_DOMAIN, AGENT_DOMAIN, DATA_PORT);
    daemon.send(
        EXEC_CMDLINE,
        &exec_params(CALLER_DOMAIN, DATA_PORT, cmdline),
    );
    let (mut data, version) = caller.accept(4);
    assert_eq!(version, 4);

    // The caller writes and reads at once, as qrexec-client does: the service streams pages
    // while it still reads the document.
    let mut writer = data.try_clone().unwrap();
    let feeder = input.map(|input| thread::spawn(move || send_stdin(&mut writer, &input, CHUNKS)));
    let received = collect(&mut data);
    if let Some(feeder) = feeder {
        feeder.join().unwrap();
    }
    let (t, terminated) = daemon.recv().expect("no CONNECTION_TERMINATED");
    assert_eq!(t, CONNECTION_TERMINATED);
    assert!(
        daemon.recv().is_none(),
        "nothing after CONNECTION_TERMINATED"
    );

    AgentCall {
        data: received,
        terminated,
        process: child.wait_with_output().unwrap(),
    }
}

/// The program's output when it serves on plain stdin and stdout.
fn direct(name: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = thread::spawn(move || stdin.write_all(&input));
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    feeder.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    out
}

fn assert_served(call: &AgentCall, service: &str, exit_code: i32) {
    assert_eq!(call.data.exit_code, Some(exit_code));
    assert_eq!(
        call.terminated,
        [CALLER_DOMAIN.to_le_bytes(), DATA_PORT.to_le_bytes()].concat()
    );
    let stderr = String::from_utf8_lossy(&call.process.stderr);
    assert!(call.process.status.success(), "agent failed: {stderr}");
    assert!(
        stderr.starts_with(&format!("uvm-init: {service} exit {exit_code} ")),
        "agent's line: {stderr}"
    );
    assert!(call.process.stdout.is_empty());
}

#[test]
fn pdf_agent_converts_a_real_document_as_the_direct_program_does() {
    let pdf = std::fs::read(corpus("text-short-cfgguide.pdf")).unwrap();
    let got = call(
        "pdf-uvm",
        "user:QUBESRPC qubes.PdfConvert+75 disp12",
        Some(pdf.clone()),
    );
    assert_served(&got, "qubes.PdfConvert", 0);
    assert!(got.data.stderr.is_empty());
    assert_eq!(got.data.stdout, direct("pdf-uvm", &["75"], &pdf));
}

#[test]
fn image_agent_converts_a_real_image_as_the_direct_program_does() {
    let png = std::fs::read(corpus("camera.png")).unwrap();
    let got = call(
        "image-uvm",
        "user:QUBESRPC qubes.GetImageRGBA disp12",
        Some([b"-\n".as_slice(), &png].concat()),
    );
    assert_served(&got, "qubes.GetImageRGBA", 0);
    let want = direct("image-uvm", &[], &[b"-\n".as_slice(), &png].concat());
    assert_eq!(got.data.stdout, want);
}

#[test]
fn broken_document_gets_its_error_line_as_stderr_and_exit_one() {
    let got = call(
        "pdf-uvm",
        "user:QUBESRPC qubes.PdfConvert+75 disp12",
        Some(b"%PDF-1.7\nthis is no pdf\n".to_vec()),
    );
    assert_served(&got, "qubes.PdfConvert", 1);
    let line = String::from_utf8(got.data.stderr).unwrap();
    assert!(line.starts_with("pdf-uvm: "), "stderr: {line}");
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn other_services_get_127_from_the_agent() {
    let got = call(
        "image-uvm",
        "user:QUBESRPC qubes.PdfConvert+75 disp12",
        None,
    );
    assert_served(&got, "qubes.PdfConvert", 127);
    assert!(got.data.stdout.is_empty());
}

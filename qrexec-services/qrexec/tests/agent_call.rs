//! End-to-end calls into the agent over the socket vchan layout, driven by a stand-in for
//! dom0's qrexec-daemon and the calling VM (see `dom0_peer`).

mod dom0_peer;

use std::io::{Read, Write};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use dom0_peer::*;
use qrexec::agent::{serve_one_call, AgentError, CallOutcome, ServiceHandler};
use qrexec::proto::ProtoError;
use qrexec::vchan::socket::SocketConnector;

/// The uvm's domain id, the caller's, and the data port dom0 picks.
const AGENT_DOMAIN: u32 = 7;
const CALLER_DOMAIN: u32 = 3;
const DATA_PORT: u32 = 513;

/// Test services: `test.Reverse` reads all stdin and writes it reversed; `test.Echo` copies as
/// it reads; `test.Exit` ignores stdin and exits with the code given as argument;
/// `test.Complain` reads all stdin, says so on stderr and exits with 1.
struct TestServices;

impl ServiceHandler for TestServices {
    fn run(
        &mut self,
        service: &str,
        arg: &str,
        stdin: &mut dyn Read,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> i32 {
        match service {
            "test.Reverse" => {
                let mut all = Vec::new();
                if stdin.read_to_end(&mut all).is_err() {
                    return 125;
                }
                all.reverse();
                if stdout.write_all(&all).is_err() {
                    return 125;
                }
                0
            }
            "test.Echo" => match std::io::copy(stdin, stdout) {
                Ok(_) => 0,
                Err(_) => 125,
            },
            "test.Exit" => arg.parse().unwrap_or(1),
            "test.Complain" => {
                let Ok(n) = std::io::copy(stdin, &mut std::io::sink()) else {
                    return 125;
                };
                match writeln!(stderr, "refused {n} bytes") {
                    Ok(()) => 1,
                    Err(_) => 125,
                }
            }
            _ => 127,
        }
    }

    fn knows(&self, service: &str) -> bool {
        matches!(
            service,
            "test.Reverse" | "test.Echo" | "test.Exit" | "test.Complain"
        )
    }
}

fn start_agent(dir: &Path) -> JoinHandle<Result<CallOutcome, AgentError>> {
    let mut connector = SocketConnector::new(dir, AGENT_DOMAIN)
        .with_accept_timeout(STEP_TIMEOUT)
        .with_connect_timeout(STEP_TIMEOUT);
    thread::spawn(move || serve_one_call(&mut connector, &mut TestServices))
}

/// dom0 connects, the caller offers its data vchan, dom0 sends the request, the caller accepts.
fn start_call(
    dir: &Path,
    msg_type: u32,
    cmdline: &str,
) -> (Daemon, std::os::unix::net::UnixStream) {
    let mut daemon = Daemon::connect(dir, AGENT_DOMAIN, 4);
    assert_eq!(daemon.agent_version, 4, "the agent announces protocol 4");
    let caller = Caller::offer(dir, CALLER_DOMAIN, AGENT_DOMAIN, DATA_PORT);
    daemon.send(msg_type, &exec_params(CALLER_DOMAIN, DATA_PORT, cmdline));
    let (data, version) = caller.accept(3);
    assert_eq!(version, 4);
    (daemon, data)
}

/// The control vchan after the call: exactly CONNECTION_TERMINATED {caller, port}, then end.
fn assert_terminated(daemon: &mut Daemon) {
    let (t, p) = daemon.recv().expect("no CONNECTION_TERMINATED");
    assert_eq!(t, CONNECTION_TERMINATED);
    assert_eq!(
        p,
        [CALLER_DOMAIN.to_le_bytes(), DATA_PORT.to_le_bytes()].concat()
    );
    assert!(
        daemon.recv().is_none(),
        "nothing after CONNECTION_TERMINATED"
    );
}

#[test]
fn large_input_in_many_chunks_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:QUBESRPC test.Reverse+ work",
    );

    let input: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut writer = data.try_clone().unwrap();
    let to_send = input.clone();
    let sender =
        thread::spawn(move || send_stdin(&mut writer, &to_send, &[1000, 65536, 1, 4096, 30000]));
    let mut reader = data;
    let got = collect(&mut reader);
    let chunks_sent = sender.join().unwrap();

    let mut expected = input;
    expected.reverse();
    assert!(got.stdout == expected, "stdout is the reversed input");
    assert!(
        got.order.iter().all(|&(_, len)| len <= 65536),
        "every chunk within the limit"
    );
    let n = got.order.len();
    assert!(n >= 6, "300 KB needs several stdout chunks");
    assert!(got.order[..n - 3]
        .iter()
        .all(|&(t, len)| t == DATA_STDOUT && len > 0));
    assert_eq!(
        got.order[n - 3..],
        [(DATA_STDOUT, 0), (DATA_STDERR, 0), (DATA_EXIT_CODE, 4)]
    );
    assert_eq!(got.exit_code, Some(0));
    assert_terminated(&mut daemon);

    let outcome = agent.join().unwrap().unwrap();
    assert_eq!(outcome.call.service, "test.Reverse");
    assert_eq!(outcome.call.source, "work");
    assert_eq!(outcome.stdin_chunks, chunks_sent as u64);
    assert_eq!(outcome.stdout_bytes, 300_000);
    assert_eq!((outcome.control_version, outcome.data_version), (4, 3));
}

#[test]
fn streaming_service_echoes_while_reading() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, data) = start_call(dir.path(), EXEC_CMDLINE, "user:QUBESRPC test.Echo+ work");
    let input = vec![0x5au8; 500_000];
    let mut writer = data.try_clone().unwrap();
    let sender = thread::spawn(move || send_stdin(&mut writer, &input, &[65536]));
    let mut reader = data;
    let got = collect(&mut reader);
    sender.join().unwrap();
    assert_eq!(got.stdout.len(), 500_000);
    assert_eq!(got.exit_code, Some(0));
    assert_terminated(&mut daemon);
    assert_eq!(agent.join().unwrap().unwrap().exit_code, 0);
}

#[test]
fn message_order_and_termination_after_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:nogui:QUBESRPC test.Reverse+ disp9",
    );
    send_stdin(&mut data, b"abc", &[2]);

    // Read the control vchan first: the output is small enough to wait in the data socket, so
    // when CONNECTION_TERMINATED arrives everything on the data vchan must already be there,
    // ending with the exit code and the close.
    assert_terminated(&mut daemon);
    data.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let got = collect(&mut data);
    assert_eq!(
        got.order,
        [
            (DATA_STDOUT, 3),
            (DATA_STDOUT, 0),
            (DATA_STDERR, 0),
            (DATA_EXIT_CODE, 4)
        ]
    );
    assert_eq!(got.stdout, b"cba");
    assert!(agent.join().unwrap().unwrap().call.nogui);
}

#[test]
fn control_vchan_stays_open_until_dom0_reads_the_termination() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "user:QUBESRPC test.Reverse+ disp9",
    );
    send_stdin(&mut data, b"abc", &[3]);
    // The agent closes the data vchan just before it sends CONNECTION_TERMINATED.
    let got = collect(&mut data);
    assert_eq!(got.stdout, b"cba");

    // qrexec-daemon may look at the control vchan a little later; closing it right after the
    // message would let the daemon drop the message unread.
    thread::sleep(Duration::from_millis(20));
    assert!(
        !agent.is_finished(),
        "the agent closed the control vchan before dom0 read CONNECTION_TERMINATED"
    );

    // Once dom0 has read the message and closed its end, the agent stops waiting.
    let (t, _) = daemon.recv().expect("no CONNECTION_TERMINATED");
    assert_eq!(t, CONNECTION_TERMINATED);
    drop(daemon);
    assert!(agent.join().unwrap().is_ok());
}

#[test]
fn service_stderr_arrives_before_the_eofs() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:QUBESRPC test.Complain work",
    );
    send_stdin(&mut data, b"12345", &[5]);
    let got = collect(&mut data);
    assert_eq!(got.stderr, b"refused 5 bytes\n");
    let n = got.order.len();
    assert!(got.order[..n - 3]
        .iter()
        .all(|&(t, len)| t == DATA_STDERR && len > 0));
    assert_eq!(
        got.order[n - 3..],
        [(DATA_STDOUT, 0), (DATA_STDERR, 0), (DATA_EXIT_CODE, 4)]
    );
    assert_eq!(got.exit_code, Some(1));
    assert_terminated(&mut daemon);
    assert_eq!(agent.join().unwrap().unwrap().exit_code, 1);
}

#[test]
fn missing_service_gets_both_eofs_and_127() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:QUBESRPC qubes.Nope+x work",
    );
    let got = collect(&mut data);
    assert_eq!(
        got.order,
        [(DATA_STDOUT, 0), (DATA_STDERR, 0), (DATA_EXIT_CODE, 4)]
    );
    assert_eq!(got.exit_code, Some(127));
    assert_terminated(&mut daemon);
    assert_eq!(agent.join().unwrap().unwrap().exit_code, 127);
}

#[test]
fn empty_stdin_is_eof_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:QUBESRPC test.Reverse+ work",
    );
    assert_eq!(send_stdin(&mut data, b"", &[1]), 1);
    let got = collect(&mut data);
    assert_eq!(
        got.order,
        [(DATA_STDOUT, 0), (DATA_STDERR, 0), (DATA_EXIT_CODE, 4)]
    );
    assert_eq!(got.exit_code, Some(0));
    assert_terminated(&mut daemon);
    assert_eq!(agent.join().unwrap().unwrap().stdin_chunks, 1);
}

#[test]
fn oversized_chunk_stops_the_call_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(
        dir.path(),
        EXEC_CMDLINE,
        "DEFAULT:QUBESRPC test.Reverse+ work",
    );
    // A header announcing 65537 bytes, followed by that many: the agent must refuse it from the
    // header alone.
    send(&mut data, DATA_STDIN, &vec![0u8; 65537]);
    let got = collect(&mut data);
    assert!(
        got.order.is_empty(),
        "no exit code after a protocol error: {:?}",
        got.order
    );
    assert_terminated(&mut daemon);
    match agent.join().expect("agent panicked") {
        Err(AgentError::Data {
            domain: CALLER_DOMAIN,
            port: DATA_PORT,
            source,
        }) => {
            assert!(
                matches!(source, ProtoError::DataChunkTooLarge { len: 65537 }),
                "{source}"
            )
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn just_exec_returns_only_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) =
        start_call(dir.path(), JUST_EXEC, "DEFAULT:QUBESRPC test.Exit+9 work");
    let got = collect(&mut data);
    assert_eq!(got.order, [(DATA_EXIT_CODE, 4)]);
    assert_eq!(got.exit_code, Some(9));
    assert_terminated(&mut daemon);
    assert!(agent.join().unwrap().unwrap().just_exec);
}

#[test]
fn plain_command_gets_125_and_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let (mut daemon, mut data) = start_call(dir.path(), EXEC_CMDLINE, "root:rm -rf /");
    let got = collect(&mut data);
    assert_eq!(
        got.order,
        [(DATA_STDOUT, 0), (DATA_STDERR, 0), (DATA_EXIT_CODE, 4)]
    );
    assert_eq!(got.exit_code, Some(125));
    assert_terminated(&mut daemon);
    assert!(matches!(
        agent.join().unwrap(),
        Err(AgentError::BadCommandLine { .. })
    ));
}

#[test]
fn service_connect_and_refused_are_ignored_before_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let mut daemon = Daemon::connect(dir.path(), AGENT_DOMAIN, 4);
    let mut connect = Vec::new();
    connect.extend_from_slice(&5u32.to_le_bytes());
    connect.extend_from_slice(&600u32.to_le_bytes());
    connect.extend_from_slice(&[b'X'; 32]);
    daemon.send(SERVICE_CONNECT, &connect);
    daemon.send(SERVICE_REFUSED, &[b'Y'; 32]);
    let caller = Caller::offer(dir.path(), CALLER_DOMAIN, AGENT_DOMAIN, DATA_PORT);
    daemon.send(
        EXEC_CMDLINE,
        &exec_params(CALLER_DOMAIN, DATA_PORT, "u:QUBESRPC test.Exit+0 w"),
    );
    let (mut data, _) = caller.accept(4);
    assert_eq!(collect(&mut data).exit_code, Some(0));
    assert_terminated(&mut daemon);
    assert_eq!(agent.join().unwrap().unwrap().ignored_requests, 2);
}

#[test]
fn protocol_two_daemon_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let mut daemon = Daemon::connect(dir.path(), AGENT_DOMAIN, 2);
    assert!(
        daemon.recv().is_none(),
        "agent hangs up on a protocol-2 daemon"
    );
    match agent.join().unwrap() {
        Err(AgentError::Control(ProtoError::UnsupportedVersion { theirs: 2 })) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_control_message_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(dir.path());
    let mut daemon = Daemon::connect(dir.path(), AGENT_DOMAIN, 4);
    daemon.send(0x4242, &[]);
    match agent.join().unwrap() {
        Err(AgentError::Control(ProtoError::UnknownType { msg_type: 0x4242 })) => {}
        other => panic!("{other:?}"),
    }
}

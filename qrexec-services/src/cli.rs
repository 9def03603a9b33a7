//! Options shared by the commands: transport, deadlines, parallelism and output format.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use converter_core::limits::Deadlines;

use crate::batch::{default_jobs, BatchOptions, ProgressMode};
use crate::transport::{TransportConfig, TransportKind, DEFAULT_IMAGE_DIR, DEFAULT_VM_MEMORY_MB};

/// Least guest memory `--vm-memory` takes: below it the kernel alone does not boot.
const MIN_VM_MEMORY_MB: i64 = 32;

/// Most guest memory `--vm-memory` takes: a uvm holds one document, and a batch runs one uvm
/// per job.
const MAX_VM_MEMORY_MB: i64 = 16 * 1024;

/// The transports a user can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportChoice {
    /// Run the uvm program as a local child process.
    Local,
    /// Call a Qubes disposable with qrexec-client-vm.
    Qrexec,
    /// Boot the uvm image under QEMU for each document (KVM where it works, TCG otherwise).
    Vm,
}

/// How the local transport confines the uvm program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxChoice {
    /// Fresh user, mount, network, IPC, UTS and PID namespaces, rlimits, an empty root and a
    /// seccomp allowlist
    Namespaces,
    /// No sandbox at all: for debugging only
    None,
}

/// Options that choose and bound the uvm.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// How to reach the uvm [default: qrexec inside a Qubes VM, local elsewhere]
    #[arg(long, value_enum)]
    pub transport: Option<TransportChoice>,

    /// Disposable template for the qrexec transport, as @dispvm:NAME (default: plain @dispvm)
    #[arg(long, value_name = "NAME")]
    pub dispvm: Option<String>,

    /// Whole-call deadline before the page count is known, in seconds
    #[arg(long, value_name = "SECS", default_value_t = Deadlines::default().call_base.as_secs())]
    pub timeout: u64,

    /// Extra whole-call time per page, in seconds
    #[arg(long, value_name = "SECS", default_value_t = Deadlines::default().per_page.as_secs())]
    pub page_timeout: u64,

    /// Longest silence allowed from the uvm, in seconds
    #[arg(long, value_name = "SECS", default_value_t = Deadlines::default().idle.as_secs())]
    pub idle_timeout: u64,

    /// Folder of uvm images for the vm transport: DIR/pdf and DIR/image, each made by
    /// `uvm-image build`, or one image in DIR itself
    #[arg(long, value_name = "DIR", default_value = DEFAULT_IMAGE_DIR)]
    pub image_dir: PathBuf,

    /// Guest memory of each uvm for the vm transport, in MiB
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_VM_MEMORY_MB,
          value_parser = clap::value_parser!(u32).range(MIN_VM_MEMORY_MB..=MAX_VM_MEMORY_MB))]
    pub vm_memory: u32,

    /// Sandbox of the local transport; `none` is for debugging only
    #[arg(long, value_enum, default_value = "namespaces")]
    pub sandbox: SandboxChoice,

    /// Folder holding the uvm programs for the local transport [default: beside this program,
    /// then PATH]
    #[arg(long, value_name = "DIR", hide = true)]
    pub uvm_dir: Option<PathBuf>,
}

impl TransportArgs {
    /// The transport configuration these options ask for.
    pub fn config(&self) -> TransportConfig {
        let kind = match self.transport {
            Some(TransportChoice::Local) => TransportKind::Local,
            Some(TransportChoice::Qrexec) => TransportKind::Qrexec,
            Some(TransportChoice::Vm) => TransportKind::Vm,
            None => TransportKind::detect(),
        };
        let mut config = TransportConfig::new(kind);
        config.dispvm = self.dispvm.clone();
        config.program_dir = self.uvm_dir.clone();
        config.sandbox = self.sandbox == SandboxChoice::Namespaces;
        if !config.sandbox && config.kind == TransportKind::Local {
            eprintln!(
                "WARNING: --sandbox none: the untrusted document is parsed by a process with all \
                 of your user's rights. Use this only to debug the converter itself."
            );
        }
        config.image_dir = Some(self.image_dir.clone());
        config.vm_memory_mb = self.vm_memory;
        config.deadlines = Deadlines {
            call_base: Duration::from_secs(self.timeout),
            per_page: Duration::from_secs(self.page_timeout),
            idle: Duration::from_secs(self.idle_timeout),
        };
        config
    }
}

/// Options for running many documents.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Documents converted at once, each in its own uvm [default: number of CPUs]
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,

    /// Print one JSON report per document on stdout
    #[arg(long)]
    pub json: bool,
}

impl BatchArgs {
    /// The batch options these flags ask for.
    pub fn options(&self) -> BatchOptions {
        BatchOptions {
            jobs: self.jobs.map(|j| j as usize).unwrap_or_else(default_jobs),
            json: self.json,
            progress: ProgressMode::detect(),
        }
    }
}

/// `~/QubesUntrustedPDFs`-style default folders under the user's home.
pub fn home_folder(name: &str) -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(name))
}

/// Extensions of the image formats the image service decodes.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "gif", "bmp", "tif", "tiff", "webp", "ico", "pbm", "pgm", "ppm",
    "pnm", "pam", "tga", "qoi", "ff", "svg",
];

/// Whether `path` names an image by its extension.
pub fn is_image(path: &std::path::Path) -> bool {
    crate::batch::has_extension(path, IMAGE_EXTENSIONS)
}

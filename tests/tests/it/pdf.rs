//! `qvm-convert-pdf` end to end through the local transport and through a stand-in for
//! `qrexec-client-vm`.

use std::fs;
use std::path::Path;

use converter_core::check::check_pdf;
use lopdf::Document;

use crate::util::*;

/// (width, height) in pixels of every page of a checked output.
fn pixel_sizes(bytes: &[u8]) -> Vec<(u32, u32)> {
    check_pdf(bytes)
        .expect("output passes the checker")
        .pages
        .iter()
        .map(|p| (p.width, p.height))
        .collect()
}

/// MediaBox sizes (width, height in points) of every page.
fn page_sizes(path: &Path) -> Vec<(f32, f32)> {
    let doc = Document::load(path).expect("parse pdf");
    doc.get_pages()
        .values()
        .map(|&id| {
            let page = doc.get_dictionary(id).expect("page");
            let mb = page
                .get(b"MediaBox")
                .ok()
                .and_then(|o| o.as_array().ok())
                .cloned()
                .or_else(|| {
                    // Inherited from the page tree.
                    let parent = page.get(b"Parent").ok()?.as_reference().ok()?;
                    doc.get_dictionary(parent)
                        .ok()?
                        .get(b"MediaBox")
                        .ok()?
                        .as_array()
                        .ok()
                        .cloned()
                })
                .expect("mediabox");
            let n: Vec<f32> = mb.iter().map(|o| o.as_float().expect("number")).collect();
            (n[2] - n[0], n[3] - n[1])
        })
        .collect()
}

#[test]
fn converts_a_real_pdf_and_archives_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_corpus("text-short-cfgguide.pdf", dir.path());
    let original_sha = sha256_file(&input);
    let sizes_in = page_sizes(&input);

    let out = convert_pdf(
        dir.path(),
        &[
            "-r",
            "75",
            "--json",
            "--transport",
            "local",
            "text-short-cfgguide.pdf",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let output = dir.path().join("text-short-cfgguide.trusted.pdf");
    let bytes = fs::read(&output).unwrap();
    let report = check_pdf(&bytes).expect("output passes the checker");
    assert_eq!(report.pages.len(), 10);

    // Page sizes survive to within one pixel at 75 ppi.
    let sizes_out = page_sizes(&output);
    assert_eq!(sizes_out.len(), sizes_in.len());
    for ((wi, hi), (wo, ho)) in sizes_in.iter().zip(&sizes_out) {
        assert!(
            (wi - wo).abs() <= 72.0 / 75.0 && (hi - ho).abs() <= 72.0 / 75.0,
            "page size {wi}x{hi} became {wo}x{ho}"
        );
    }

    // The original went to the archive, unchanged.
    assert!(!input.exists());
    let archived = dir
        .path()
        .join("QubesUntrustedPDFs/text-short-cfgguide.pdf");
    assert_eq!(sha256_file(&archived), original_sha);

    let reports = reports(&out);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["status"], "converted");
    assert_eq!(r["pages"], 10);
    assert_eq!(r["dpi"], 75);
    assert_eq!(r["transport"], "local");
    assert_eq!(r["input_sha256"], original_sha.as_str());
    assert_eq!(
        r["output_sha256"],
        converter_core::report::sha256_hex(&bytes).as_str()
    );
    assert_eq!(r["output_bytes"], bytes.len() as u64);
}

#[test]
fn output_holds_nothing_but_page_images() {
    // A document with fonts, links and an outline: none of it may survive.
    let dir = tempfile::tempdir().unwrap();
    copy_corpus("fonts-reportlab-userguide.pdf", dir.path());
    let out = convert_pdf(
        dir.path(),
        &["-r", "75", "-i", "fonts-reportlab-userguide.pdf"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = fs::read(dir.path().join("fonts-reportlab-userguide.trusted.pdf")).unwrap();
    check_pdf(&bytes).expect("checker");

    let doc = Document::load_mem(&bytes).unwrap();
    assert!(doc.trailer.get(b"Info").is_err());
    for (_, object) in doc.objects.iter() {
        let dict = match object {
            lopdf::Object::Dictionary(d) => d,
            lopdf::Object::Stream(s) => &s.dict,
            _ => continue,
        };
        for forbidden in [
            &b"Font"[..],
            b"Annots",
            b"Outlines",
            b"AcroForm",
            b"JavaScript",
            b"EmbeddedFiles",
            b"Metadata",
            b"OpenAction",
            b"Names",
        ] {
            assert!(
                dict.get(forbidden).is_err(),
                "output has /{}",
                String::from_utf8_lossy(forbidden)
            );
        }
    }
    // --in-place removes the original and archives nothing.
    assert!(!dir.path().join("fonts-reportlab-userguide.pdf").exists());
    assert!(!dir.path().join("QubesUntrustedPDFs").exists());
}

#[test]
fn failing_conversion_leaves_no_output_and_the_original_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.pdf");
    fs::write(&input, b"%PDF-1.7\nthis is not a pdf at all\n").unwrap();
    let before = sha256_file(&input);

    let out = convert_pdf(dir.path(), &["--json", "broken.pdf"]);
    assert_eq!(out.status.code(), Some(1));
    let reports = reports(&out);
    assert_eq!(reports[0]["status"], "failed");
    let error = reports[0]["error"].as_str().unwrap();
    assert!(error.contains("uvm failed"), "{error}");

    assert_eq!(
        listing(dir.path()),
        ["broken.pdf"],
        "nothing else may be written"
    );
    assert_eq!(sha256_file(&input), before);
}

#[test]
fn several_files_and_a_folder_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    fs::create_dir(&docs).unwrap();
    fs::write(docs.join("a.pdf"), blank_pdf(200, 100)).unwrap();
    fs::write(docs.join("b.PDF"), blank_pdf(100, 200)).unwrap();
    fs::write(docs.join("notes.txt"), b"not a pdf").unwrap();
    fs::write(dir.path().join("c.pdf"), blank_pdf(72, 72)).unwrap();

    let out = convert_pdf(
        dir.path(),
        &["-j", "2", "--json", "-r", "75", "docs", "c.pdf"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(reports(&out).len(), 3);
    assert_eq!(
        listing(&docs),
        ["a.trusted.pdf", "b.trusted.pdf", "notes.txt"]
    );
    // A 72 x 72 pt page at 75 ppi is 75 x 75 px.
    assert_eq!(
        pixel_sizes(&fs::read(dir.path().join("c.trusted.pdf")).unwrap()),
        [(75, 75)]
    );
    assert_eq!(
        listing(&dir.path().join("QubesUntrustedPDFs")),
        ["a.pdf", "b.PDF", "c.pdf"]
    );
}

#[test]
fn archive_never_overwrites_an_earlier_original() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2u32 {
        fs::write(dir.path().join("doc.pdf"), blank_pdf(100 + round, 100)).unwrap();
        let out = convert_pdf(dir.path(), &["-r", "75", "-a", "old", "doc.pdf"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(listing(&dir.path().join("old")), ["doc.1.pdf", "doc.pdf"]);
    assert_eq!(
        fs::read(dir.path().join("old/doc.pdf")).unwrap(),
        blank_pdf(100, 100)
    );
}

#[test]
fn jpeg_compression_is_smaller_and_still_clean() {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(corpus("vector-fiziko.pdf"), dir.path().join("a.pdf")).unwrap();
    fs::copy(corpus("vector-fiziko.pdf"), dir.path().join("b.pdf")).unwrap();
    let out = convert_pdf(dir.path(), &["-r", "75", "-i", "a.pdf"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = convert_pdf(
        dir.path(),
        &["-r", "75", "-i", "--compress", "jpeg:60", "b.pdf"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lossless = fs::read(dir.path().join("a.trusted.pdf")).unwrap();
    let jpeg = fs::read(dir.path().join("b.trusted.pdf")).unwrap();
    check_pdf(&jpeg).expect("jpeg output passes the checker");
    assert!(
        jpeg.len() < lossless.len(),
        "jpeg {} >= lossless {}",
        jpeg.len(),
        lossless.len()
    );
}

#[test]
fn password_comes_from_a_file_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.pdf");
    fs::write(&plain, blank_pdf(144, 72)).unwrap();
    let status = std::process::Command::new("qpdf")
        .args(["--encrypt", "s3cret", "owner", "256", "--"])
        .arg(&plain)
        .arg(dir.path().join("locked.pdf"))
        .status()
        .expect("qpdf is installed by scripts/setup.sh");
    assert!(status.success());
    fs::remove_file(&plain).unwrap();

    // Without the password: a clear failure, nothing written.
    let out = convert_pdf(dir.path(), &["--json", "-r", "75", "locked.pdf"]);
    assert_eq!(out.status.code(), Some(1));
    let error = reports(&out)[0]["error"].as_str().unwrap().to_string();
    assert!(error.contains("password"), "{error}");
    assert_eq!(listing(dir.path()), ["locked.pdf"]);

    // With it, through descriptor 3 (a file opened by the shell).
    fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} --password-fd 3 -r 75 -i locked.pdf 3<pw",
            program("qvm-convert-pdf").display()
        ))
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pixel_sizes(&fs::read(dir.path().join("locked.trusted.pdf")).unwrap()),
        [(150, 75)]
    );
}

#[test]
fn usage_errors_exit_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.pdf"), blank_pdf(72, 72)).unwrap();
    for args in [
        &["missing.pdf"][..],
        &["-r", "74", "a.pdf"],
        &["-r", "4801", "a.pdf"],
        &["--compress", "jpeg:0", "a.pdf"],
        &["--no-such-option", "a.pdf"],
    ] {
        let out = convert_pdf(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(listing(dir.path()), ["a.pdf"], "{args:?}");
    }
}

/// The qrexec transport talks to `qrexec-client-vm` exactly as Qubes' client does: target
/// `@dispvm[:NAME]`, service `qubes.PdfConvert+RES`, the document on stdin, the stream on
/// stdout. The stand-in records its arguments and serves the call with the real pdf-uvm, as
/// the service in a disposable would (the argument reaches it in QREXEC_SERVICE_ARGUMENT).
#[test]
fn qrexec_transport_calls_qrexec_client_vm_as_qubes_does() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let stand_in = bin.join("qrexec-client-vm");
    fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {args}\ncase \"$2\" in\n  qubes.PdfConvert+*) \
             QREXEC_SERVICE_ARGUMENT=\"${{2#qubes.PdfConvert+}}\" exec {uvm} ;;\nesac\nexit 127\n",
            args = dir.path().join("args").display(),
            uvm = program("pdf-uvm").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.path().join("doc.pdf"), blank_pdf(72, 144)).unwrap();

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(program("qvm-convert-pdf"))
        .args([
            "--transport",
            "qrexec",
            "--dispvm",
            "conv",
            "-r",
            "150",
            "--json",
            "-i",
            "doc.pdf",
        ])
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("args")).unwrap(),
        "@dispvm:conv\nqubes.PdfConvert+150\n"
    );
    assert_eq!(reports(&out)[0]["transport"], "qrexec");
    assert_eq!(
        pixel_sizes(&fs::read(dir.path().join("doc.trusted.pdf")).unwrap()),
        [(150, 300)]
    );
}

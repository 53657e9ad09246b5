//! The control plane's certificates and keys, made with the openssl command line (installed by
//! scripts/install-deps.sh): a CA, the API server's serving certificate for 127.0.0.1, a
//! `system:masters` client certificate for the harness, kubectl, helm and the controller
//! manager, and the key pair that signs ServiceAccount tokens. P-256 keys: quick to make.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{ClusterError, Result};

pub struct Certs {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

fn openssl(dir: &Path, what: &str, args: &[&str]) -> Result<()> {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(ClusterError::io(format!(
            "run openssl to {what} (install it with scripts/install-deps.sh)"
        )))?;
    if output.status.success() {
        return Ok(());
    }
    Err(ClusterError::Command {
        what: format!("openssl, {what}"),
        status: output.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

const NEW_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A key and a certificate signed by the CA in `dir`.
fn leaf(dir: &Path, name: &str, subject: &str, extensions: &str) -> Result<()> {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).map_err(ClusterError::io(format!(
        "write {}",
        dir.join(&ext).display()
    )))?;
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend(NEW_KEY);
    req.extend(["-keyout", &key, "-subj", subject, "-out", &csr]);
    openssl(dir, &format!("make the {name} key"), &req)?;
    let crt = format!("{name}.crt");
    openssl(
        dir,
        &format!("sign the {name} certificate"),
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    )
}

impl Certs {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(ClusterError::io(format!("create {}", dir.display())))?;
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "7"];
        ca.extend(NEW_KEY);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=tributary-e2e-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]);
        openssl(dir, "make the CA", &ca)?;
        leaf(
            dir,
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n\
             extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )?;
        leaf(
            dir,
            "admin",
            "/O=system:masters/CN=tributary-e2e-admin",
            "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        )?;
        openssl(
            dir,
            "make the ServiceAccount signing key",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sa.key",
            ],
        )?;
        openssl(
            dir,
            "write the ServiceAccount public key",
            &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        )?;
        Ok(Self {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("apiserver.crt"),
            server_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        })
    }
}

//! Certificates generated at test time (rcgen), written to a fresh
//! directory so config tests read real files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

/// A CA, a server certificate for localhost signed by it, a client
/// certificate signed by it, and an unrelated CA, as PEM files in `dir`.
pub(crate) struct TestCerts {
    pub(crate) dir: PathBuf,
}

impl TestCerts {
    pub(crate) fn new(name: &str) -> Result<TestCerts, Box<dyn std::error::Error>> {
        let dir =
            std::env::temp_dir().join(format!("resilient-redis-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (ca, ca_key) = make_ca("test CA")?;
        let (other, _) = make_ca("unrelated CA")?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("other-ca.pem"), other.pem())?;
        let client_key = KeyPair::generate()?;
        let client = CertificateParams::new(vec!["client".to_string()])?.signed_by(
            &client_key,
            &ca,
            &ca_key,
        )?;
        std::fs::write(dir.join("client.pem"), client.pem())?;
        std::fs::write(dir.join("client.key"), client_key.serialize_pem())?;
        std::fs::write(dir.join("other.key"), KeyPair::generate()?.serialize_pem())?;
        Ok(TestCerts { dir })
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> Result<PathBuf, std::io::Error> {
        let p = self.path(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_ca(name: &str) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok((params.self_signed(&key)?, key))
}

//! The demo's own STI PKI, made fresh at each run so that its calls are
//! really signed and verified: an STI root (the verifier's trust anchor),
//! a SHAKEN certificate under it for service provider code `DEMO`
//! (ATIS-1000080 §6.4: TNAuthList with an SPC, the SHAKEN certificate
//! policy) whose subject is `O=Demo Telecom, CN=SHAKEN DEMO` (the signer
//! the verification text names), and a web CA with a server certificate for `127.0.0.1`, so
//! that the x5u fetch is a real HTTPS request (RFC 8224 §6.2.4). Nothing
//! of it outlives the demo's scratch directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// TNAuthList (RFC 8226 §9) with SPC "DEMO":
/// SEQUENCE { [0] EXPLICIT IA5String "DEMO" }.
const TN_AUTH_LIST: [u8; 10] = [0x30, 0x08, 0xa0, 0x06, 0x16, 0x04, b'D', b'E', b'M', b'O'];

/// The TNAuthList extension's OID, 1.3.6.1.5.5.7.1.26 (RFC 8226 §9).
const TN_AUTH_LIST_OID: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 1, 26];

/// The SHAKEN certificate policy 2.16.840.1.114569.1.1.3 as a
/// certificatePolicies value: SEQUENCE { SEQUENCE { OID } }.
const SHAKEN_POLICY: [u8; 16] = [
    0x30, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xff, 0x09, 0x01, 0x01, 0x03,
];

/// The organisation in the SHAKEN certificate's subject: who signed.
pub const SIGNER_ORGANIZATION: &str = "Demo Telecom";

/// What the demo's callgate and its x5u server need.
pub struct DemoPki {
    /// The SHAKEN certificate then the root, PEM: what x5u serves.
    pub chain_pem: String,
    /// The SHAKEN certificate's private key, PEM (P-256).
    pub signing_key_pem: String,
    /// The web server's certificate and key, DER, for the x5u server.
    pub web_cert_der: Vec<u8>,
    pub web_key_der: Vec<u8>,
    /// `[stir] trust_dir`: the STI root.
    pub trust_dir: PathBuf,
    /// `[stir] x5u_ca`: the web CA.
    pub web_ca: PathBuf,
}

fn failed(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("demo PKI: {what}: {e}")
}

fn ca_params(name: &str) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(failed(name))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.distinguished_name.push(DnType::CommonName, name);
    Ok(p)
}

fn policy() -> CustomExtension {
    CustomExtension::from_oid_content(&[2, 5, 29, 32], SHAKEN_POLICY.to_vec())
}

/// Makes the PKI and writes the trust files under `dir`.
pub fn make(dir: &Path) -> Result<DemoPki, String> {
    let root_key = KeyPair::generate().map_err(failed("root key"))?;
    let mut root = ca_params("callgate demo STI root")?;
    root.custom_extensions = vec![policy()];
    let root = root.self_signed(&root_key).map_err(failed("root"))?;

    let sti_key = KeyPair::generate().map_err(failed("SHAKEN key"))?;
    let mut sti = CertificateParams::new(Vec::<String>::new()).map_err(failed("SHAKEN"))?;
    sti.distinguished_name
        .push(DnType::OrganizationName, SIGNER_ORGANIZATION);
    sti.distinguished_name
        .push(DnType::CommonName, "SHAKEN DEMO");
    sti.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    sti.custom_extensions = vec![
        CustomExtension::from_oid_content(&TN_AUTH_LIST_OID, TN_AUTH_LIST.to_vec()),
        policy(),
    ];
    let sti = sti
        .signed_by(&sti_key, &root, &root_key)
        .map_err(failed("SHAKEN certificate"))?;

    let web_ca_key = KeyPair::generate().map_err(failed("web CA key"))?;
    let web_ca = ca_params("callgate demo web CA")?
        .self_signed(&web_ca_key)
        .map_err(failed("web CA"))?;
    let web_key = KeyPair::generate().map_err(failed("web key"))?;
    let web = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .map_err(failed("web"))?
        .signed_by(&web_key, &web_ca, &web_ca_key)
        .map_err(failed("web certificate"))?;

    let trust_dir = dir.join("trust");
    let web_ca_file = dir.join("web-ca.pem");
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    std::fs::create_dir_all(&trust_dir).map_err(|e| format!("{}: {e}", trust_dir.display()))?;
    write(&trust_dir.join("demo-sti-root.pem"), &root.pem())?;
    write(&web_ca_file, &web_ca.pem())?;
    Ok(DemoPki {
        chain_pem: format!("{}{}", sti.pem(), root.pem()),
        signing_key_pem: sti_key.serialize_pem(),
        web_cert_der: web.der().to_vec(),
        web_key_der: web_key.serialize_der(),
        trust_dir,
        web_ca: web_ca_file,
    })
}

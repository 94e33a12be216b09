//! The one-time RSA key pair of a pre-created machine (FACTS §10 step 1): RSA-2048, generated in
//! this process from the kernel's RNG. The agent wants the private key as PKCS#1 `RSAPrivateKey`
//! DER in standard base64 with padding on one line (PKCS#8 makes it fail with "asn1: structure
//! error"); the machine resource wants the public key as PKCS#1 `RSAPublicKey` DER base64 (not
//! SPKI). The private key is `secret::PrivateKey`: no `Debug`/`Display` of its value, every copy
//! of its bytes zeroed when dropped, the text reachable only through `expose()`.

use std::time::{Duration, Instant};

use base64::Engine;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use zeroize::Zeroizing;

use crate::secret::PrivateKey;

/// FACTS §10: the documented flow makes a 2048-bit key (`openssl genrsa 2048`).
pub const KEY_BITS: usize = 2048;

/// A fresh key pair and how long making it took (for the log line).
#[derive(Debug)]
pub struct KeyPair {
    pub private: PrivateKey,
    /// Base64 of the PKCS#1 `RSAPublicKey` DER: the machine resource's `clientPublicKey`. Public.
    pub public: String,
    pub took: Duration,
}

/// Make a new RSA-2048 key pair. Fails only when the kernel's RNG cannot be read or the encoder
/// refuses (both "cannot happen" on Linux; the message says which).
pub fn generate() -> Result<KeyPair, String> {
    let started = Instant::now();
    let mut rng = getrandom::SysRng;
    let key = rsa::PrivateKey::new(&mut rng, KEY_BITS)
        .map_err(|e| format!("RSA-{KEY_BITS} key generation failed: {e}"))?;
    // `SecretDocument` zeroes its DER on drop; the base64 copy is `Zeroizing` too.
    let der = key
        .to_pkcs1_der()
        .map_err(|e| format!("PKCS#1 encoding of the private key failed: {e}"))?;
    let private = PrivateKey::new(Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
    ));
    let public_der = key
        .to_public_key()
        .to_pkcs1_der()
        .map_err(|e| format!("PKCS#1 encoding of the public key failed: {e}"))?;
    let public = base64::engine::general_purpose::STANDARD.encode(public_der.as_bytes());
    Ok(KeyPair {
        private,
        public,
        took: started.elapsed(),
    })
}

/// A new random (version 4) GUID for the machine resource's `vmId` (FACTS §10 step 2: the doc
/// uses `uuidgen`), lower case, from the kernel's RNG.
pub fn new_vm_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("cannot read the kernel's RNG: {e}"))?;
    Ok(format_guid_v4(b))
}

/// RFC 4122 §4.4: version 4 in the high nibble of byte 6, variant 10xx in byte 8.
fn format_guid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
    use rsa::traits::PublicKeyParts;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("standard base64 with padding")
    }

    #[test]
    fn private_key_is_one_line_standard_base64_of_pkcs1_der() {
        let kp = generate().unwrap();
        let text = kp.private.expose();
        assert!(
            !text.contains(['\n', '\r', ' ', '-', '_']),
            "one line, standard alphabet"
        );
        assert_eq!(text.len() % 4, 0, "padded");
        let der = b64(text);
        // PKCS#1 RSAPrivateKey: SEQUENCE (30 82 len len) { INTEGER version = 0 (02 01 00), INTEGER n ...
        // PKCS#8 would continue 02 01 00 30 0d 06 09 (AlgorithmIdentifier) instead.
        assert_eq!(&der[..2], &[0x30, 0x82], "a long-form SEQUENCE");
        assert_eq!(&der[4..7], &[0x02, 0x01, 0x00], "version 0 INTEGER");
        assert_eq!(
            &der[7..9],
            &[0x02, 0x82],
            "then the modulus INTEGER, not an AlgorithmIdentifier"
        );
        let key = rsa::PrivateKey::from_pkcs1_der(&der).expect("parses as PKCS#1");
        assert_eq!(key.n().bit_width(), KEY_BITS as u32);
        use rsa::pkcs8::DecodePrivateKey;
        assert!(rsa::PrivateKey::from_pkcs8_der(&der).is_err(), "not PKCS#8");
    }

    #[test]
    fn public_key_is_pkcs1_rsapublickey_not_spki_and_matches_the_private_half() {
        let kp = generate().unwrap();
        let der = b64(&kp.public);
        // RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e } — SPKI would start with an
        // AlgorithmIdentifier SEQUENCE (30 0d 06 09 2a 86 48 86 f7 0d 01 01 01).
        assert_eq!(&der[..2], &[0x30, 0x82]);
        assert_eq!(
            &der[4..6],
            &[0x02, 0x82],
            "first element is the modulus INTEGER"
        );
        assert!(
            !der.windows(9)
                .any(|w| w == [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01]),
            "no rsaEncryption OID: not SPKI"
        );
        assert!(der.ends_with(&[0x02, 0x03, 0x01, 0x00, 0x01]), "e = 65537");
        let public = rsa::PublicKey::from_pkcs1_der(&der).expect("parses as RSAPublicKey");
        let private = rsa::PrivateKey::from_pkcs1_der(&b64(kp.private.expose())).unwrap();
        assert_eq!(
            &private.to_public_key(),
            &public,
            "the public half of this private key"
        );
    }

    #[test]
    fn round_trip_and_every_key_is_new() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.public, b.public);
        assert_ne!(a.private.expose(), b.private.expose());
        let der = b64(a.private.expose());
        let key = rsa::PrivateKey::from_pkcs1_der(&der).unwrap();
        let again = base64::engine::general_purpose::STANDARD
            .encode(key.to_pkcs1_der().unwrap().as_bytes());
        assert_eq!(
            again,
            a.private.expose(),
            "decode then encode gives the same text"
        );
    }

    #[test]
    fn vm_ids_are_random_version_4_guids() {
        assert_eq!(
            format_guid_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        assert_eq!(
            format_guid_v4([0; 16]),
            "00000000-0000-4000-8000-000000000000"
        );
        let a = new_vm_id().unwrap();
        assert_ne!(a, new_vm_id().unwrap());
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(a
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(&parts[2][..1], "4");
        assert!("89ab".contains(&parts[3][..1]));
    }

    #[test]
    fn debug_never_shows_the_private_key() {
        let kp = generate().unwrap();
        let shown = format!("{kp:?} {:?}", kp.private);
        assert!(shown.contains("redacted"), "{shown}");
        let secret = kp.private.expose();
        // The PKCS#1 private key starts with the modulus and exponent, the public key's whole
        // content, at a base64-aligned offset (12 vs 9 DER bytes): those fragments are public and
        // do appear in `public`. Every fragment past them must not.
        let public_overlap = (0..secret.len() - 16)
            .filter(|i| kp.public.contains(&secret[*i..i + 16]))
            .max()
            .expect("the modulus is shared");
        assert!(
            public_overlap < 400,
            "only the first ~366 chars are public: {public_overlap}"
        );
        for i in public_overlap + 1..secret.len() - 16 {
            assert!(
                !shown.contains(&secret[i..i + 16]),
                "fragment {i} of the key in {shown}"
            );
        }
    }
}

//! The validity period of an X.509 certificate (RFC 5280 §4.1.2.5), read from its DER: the
//! only field tokengate needs, so a few lines of DER walking instead of an ASN.1 library.

/// `notBefore` and `notAfter`, as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version` at the start of `TBSCertificate`.
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: the low bits say how many length bytes follow (at most 4 here).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(count)?;
        let len = bytes
            .iter()
            .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = element(input)?;
    (found == tag).then_some((contents, rest))
}

/// The validity of a DER certificate; `None` if it is not one.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let tbs = match element(tbs)? {
        (VERSION, _, rest) => rest,
        _ => tbs,
    };
    let (_serial, rest) = expect(tbs, INTEGER)?;
    let (_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

/// RFC 5280 §4.1.2.5.1/2: `YYMMDDHHMMSSZ` (years 1950–2049) or `YYYYMMDDHHMMSSZ`.
fn time(input: &[u8]) -> Option<(i64, &[u8])> {
    let (tag, contents, rest) = element(input)?;
    let text = std::str::from_utf8(contents).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, digits) = match tag {
        UTC_TIME => {
            let (yy, digits) = digits.split_at_checked(2)?;
            let yy: i32 = yy.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, digits)
        }
        GENERALIZED_TIME => {
            let (yyyy, digits) = digits.split_at_checked(4)?;
            (yyyy.parse().ok()?, digits)
        }
        _ => return None,
    };
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| digits.get(at..at + 2)?.parse::<u32>().ok();
    let seconds = chrono::NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)?
        .and_hms_opt(field(4)?, field(6)?, field(8)?)?
        .and_utc()
        .timestamp();
    Some((seconds, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: i64, not_after: i64) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_secs(not_before);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_secs(not_after);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn time_secs(secs: i64) -> std::time::Duration {
        std::time::Duration::from_secs(u64::try_from(secs).unwrap())
    }

    #[test]
    fn utc_and_generalized_times_are_read_as_unix_seconds() {
        // 2026-12-07 10:00:00 (UTCTime) and 2051-02-28 12:34:56 (GeneralizedTime: after 2049).
        let der = certificate(1_796_637_600, 2_561_200_496);
        assert_eq!(
            validity(&der),
            Some(Validity {
                not_before: 1_796_637_600,
                not_after: 2_561_200_496
            })
        );
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
        let der = certificate(0, 86_400);
        assert_eq!(validity(der.get(..40).unwrap()), None);
    }
}

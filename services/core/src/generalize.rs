//! Generalisations shared by the edge (privacy at source) and the processor
//! (privacy in the lake), so both coarsen a value the same way: an IPv4
//! address to its /24, a free-text location to an ISO country code.

/// `"a.b.c.d"` (or `"a.b.c.0/24"`) -> `"a.b.c.0/24"`; anything that is not a dotted IPv4 address -> `None`.
pub fn ipv4_slash24(text: &str) -> Option<String> {
    let text = text.trim();
    // Already generalised at the edge (`privacy.ip_address = "mask24"`).
    let text = text.strip_suffix("/24").unwrap_or(text);
    let ip: std::net::Ipv4Addr = text.parse().ok()?;
    let [a, b, c, _] = ip.octets();
    Some(format!("{a}.{b}.{c}.0/24"))
}

/// Country names (lower case, as words) and their ISO 3166 alpha-2 codes.
const COUNTRY_NAMES: &[(&str, &str)] = &[
    ("germany", "DE"),
    ("deutschland", "DE"),
    ("france", "FR"),
    ("united states of america", "US"),
    ("united states", "US"),
    ("usa", "US"),
    ("united kingdom", "GB"),
    ("great britain", "GB"),
    ("england", "GB"),
    ("scotland", "GB"),
    ("wales", "GB"),
    ("netherlands", "NL"),
    ("nederland", "NL"),
    ("holland", "NL"),
    ("spain", "ES"),
    ("españa", "ES"),
    ("espana", "ES"),
    ("italy", "IT"),
    ("italia", "IT"),
    ("japan", "JP"),
    ("china", "CN"),
    ("switzerland", "CH"),
    ("schweiz", "CH"),
    ("suisse", "CH"),
    ("svizzera", "CH"),
    ("austria", "AT"),
    ("österreich", "AT"),
    ("osterreich", "AT"),
    ("belgium", "BE"),
    ("belgique", "BE"),
    ("belgië", "BE"),
    ("poland", "PL"),
    ("polska", "PL"),
    ("sweden", "SE"),
    ("sverige", "SE"),
    ("denmark", "DK"),
    ("danmark", "DK"),
    ("norway", "NO"),
    ("norge", "NO"),
    ("finland", "FI"),
    ("suomi", "FI"),
    ("ireland", "IE"),
    ("portugal", "PT"),
    ("canada", "CA"),
    ("australia", "AU"),
    ("india", "IN"),
    ("brazil", "BR"),
    ("brasil", "BR"),
    ("mexico", "MX"),
    ("south korea", "KR"),
    ("korea", "KR"),
    ("singapore", "SG"),
    ("czech republic", "CZ"),
    ("czechia", "CZ"),
];

/// Codes recognised when written in upper case as a word of their own
/// (`"Berlin, DE"`); lower-case `de`/`it`/`at` are ordinary words in many
/// languages and are not taken as codes.
const COUNTRY_CODES: &[(&str, &str)] = &[
    ("DE", "DE"),
    ("FR", "FR"),
    ("US", "US"),
    ("USA", "US"),
    ("GB", "GB"),
    ("UK", "GB"),
    ("NL", "NL"),
    ("ES", "ES"),
    ("IT", "IT"),
    ("JP", "JP"),
    ("CN", "CN"),
    ("CH", "CH"),
    ("AT", "AT"),
    ("BE", "BE"),
    ("PL", "PL"),
    ("SE", "SE"),
    ("DK", "DK"),
    ("NO", "NO"),
    ("FI", "FI"),
    ("IE", "IE"),
    ("PT", "PT"),
    ("CA", "CA"),
    ("AU", "AU"),
    ("IN", "IN"),
    ("BR", "BR"),
    ("MX", "MX"),
    ("KR", "KR"),
    ("SG", "SG"),
    ("CZ", "CZ"),
];

/// The ISO 3166 alpha-2 code of a country named in free text (`"Berlin, DE,
/// 2nd floor"` -> `DE`, `"Lyon, France"` -> `FR`), or `None` when no country
/// is recognisable. Names win over codes; the first match wins among each.
pub fn country_code(text: &str) -> Option<&'static str> {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    for start in 0..lower.len() {
        for &(name, code) in COUNTRY_NAMES {
            let parts: Vec<&str> = name.split(' ').collect();
            if start + parts.len() <= lower.len()
                && parts
                    .iter()
                    .zip(&lower[start..])
                    .all(|(p, w)| *p == w.as_str())
            {
                return Some(code);
            }
        }
    }
    words.iter().find_map(|w| {
        COUNTRY_CODES
            .iter()
            .find(|(token, _)| token == w)
            .map(|(_, code)| *code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash24_accepts_addresses_and_masked_addresses() {
        assert_eq!(ipv4_slash24("10.1.2.3").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(ipv4_slash24("10.1.2.0/24").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(ipv4_slash24("10.1.2.0/16"), None);
        assert_eq!(ipv4_slash24("fe80::1"), None);
        assert_eq!(ipv4_slash24("printer"), None);
    }

    #[test]
    fn country_from_free_text() {
        assert_eq!(country_code("Berlin, DE, CANARY-ROOM"), Some("DE"));
        assert_eq!(country_code("Lyon, France"), Some("FR"));
        assert_eq!(country_code("Room 101"), None);
    }
}

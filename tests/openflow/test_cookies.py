"""The cookie layout: tag, purpose and owner survive a round trip, and the tag is all that marks ours."""

from openflow import cookies
from openflow.cookies import Purpose

TAG = 0x55AA_0000_0000_0000


def test_round_trip_names_purpose_and_owner() -> None:
    cookie = cookies.make(TAG, Purpose.ARP_RESPONDER, cookies.ip_owner("198.18.0.5"))
    decoded = cookies.decode(cookie)
    assert decoded.tag == TAG and decoded.purpose is Purpose.ARP_RESPONDER
    owners = cookies.owner_names([(cookies.ip_owner("198.18.0.5"), "default/web-0")])
    assert decoded.describe(owners) == "arp_responder for default/web-0"


def test_same_inputs_same_cookie_different_owner_different_cookie() -> None:
    a = cookies.make(TAG, Purpose.FORWARD, cookies.mac_owner("02:00:00:00:00:01"))
    assert a == cookies.make(TAG, Purpose.FORWARD, cookies.mac_owner("02:00:00:00:00:01".upper()))
    assert a != cookies.make(TAG, Purpose.FORWARD, cookies.mac_owner("02:00:00:00:00:02"))


def test_only_the_tag_marks_a_flow_as_ours() -> None:
    cookie = cookies.make(TAG | 0x1234, Purpose.FLOOD, cookies.port_owner(3))
    assert cookies.is_ours(cookie, TAG)
    assert not cookies.is_ours(cookie ^ (1 << 48), TAG)


def test_unknown_purpose_and_owner_are_shown_not_lost() -> None:
    decoded = cookies.decode(TAG | 0xFE << 40 | 0xABCD)
    assert decoded.purpose == 0xFE
    assert decoded.describe() == "purpose254 for owner 0x0000abcd"
    assert cookies.decode(cookies.make(TAG, Purpose.PIPELINE)).describe() == "pipeline"


def test_the_switchs_records_carry_another_tag_never_ours() -> None:
    assert cookies.seen_tag(TAG | 0x1234) == 0xAA55 << 48
    assert not cookies.is_ours(cookies.make(cookies.seen_tag(TAG), Purpose.SEEN), TAG)
    for tag in (1 << 48, 0xFFFF << 48, 0x8000 << 48):
        assert cookies.seen_tag(tag) != tag


def test_owner_name_is_empty_for_none_and_the_id_for_one_not_known() -> None:
    decoded = cookies.decode(cookies.make(TAG, Purpose.TRUSTED, cookies.port_owner(9)))
    assert decoded.owner_name() == f"{cookies.owner_id('port:9'):#010x}"
    assert decoded.owner_name(cookies.owner_names([("port:9", "uplink")])) == "uplink"
    assert cookies.decode(TAG).owner_name() == "" and cookies.decode(TAG).purpose_label == "pipeline"

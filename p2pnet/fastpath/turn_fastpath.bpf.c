// SPDX-License-Identifier: GPL-2.0
/*
 * p2pnet's TURN channel-data fast path (docs/fastpath.md): a TC (tcx) ingress program
 * that forwards, without waking the p2pnet process,
 *   - ChannelData from a client over UDP -> a UDP datagram from the relayed address to
 *     the peer (the 4-byte header and any padding removed), and
 *   - a UDP datagram from a peer to a relayed address -> ChannelData to the client,
 * for the channels the TURN service wrote into the maps below. Everything else, and
 * every packet whose entry is past its deadline, goes on unchanged (TC_ACT_UNSPEC,
 * which tcx reads as "next": other programs on the hook still see it, then the stack;
 * the Python path serves it as before).
 *
 * IPv4 without options and IPv6 without extension headers; UDP only. Addresses and
 * ports in the maps are in network byte order, as in the packet.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define AF_INET6 10
#define ETH_LEN sizeof(struct ethhdr)
#define IP4_LEN sizeof(struct iphdr)
#define IP6_LEN sizeof(struct ipv6hdr)
#define UDP_LEN sizeof(struct udphdr)
#define MAX_ENTRIES 65536

/* Client -> peer: which channel of which client 5-tuple goes to which peer. */
struct fwd_key {
	__u8 client[16];	/* IPv4 in the first 4 bytes, the rest zero */
	__u8 server[16];
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 family;		/* AF_INET or AF_INET6, host order */
};

struct fwd_value {
	__u8 relayed[16];
	__u8 peer[16];
	__u16 relayed_port;
	__u16 peer_port;
	__u32 allocation;
	__u32 ifindex;		/* the interface towards the peer (the route, from p2pnet) */
	__u32 pad;
	__u64 deadline_ns;	/* bpf_ktime_get_ns() after which the Python path decides */
};

/* Peer -> client: which relayed address and peer belong to which client's channel. */
struct rev_key {
	__u8 peer[16];
	__u8 relayed[16];
	__u16 peer_port;
	__u16 relayed_port;
	__u16 family;
	__u16 pad;
};

struct rev_value {
	__u8 client[16];
	__u8 server[16];
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 confirmed;	/* the client knows the binding: ChannelData, not Data indications */
	__u32 allocation;
	__u32 ifindex;		/* the interface towards the client */
	__u64 deadline_ns;
};

struct counters {
	__u64 packets_out;	/* client -> peer */
	__u64 bytes_out;
	__u64 packets_in;	/* peer -> client */
	__u64 bytes_in;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct fwd_key);
	__type(value, struct fwd_value);
} fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct rev_key);
	__type(value, struct rev_value);
} rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, __u32);
	__type(value, struct counters);
} alloc_counters SEC(".maps");

/* Whole-program counters, by index: see STAT_* in p2pnet/codecs/fastpath_maps.py. */
enum { STAT_FORWARDED_OUT, STAT_FORWARDED_IN, STAT_EXPIRED, STAT_TOO_LONG,
       STAT_ADJUST_FAILED, STAT_MALFORMED, STAT_COUNT };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&stats, &index);

	if (value)
		*value += 1;
}

static __always_inline void account(__u32 allocation, __u64 bytes, int out)
{
	struct counters *c = bpf_map_lookup_elem(&alloc_counters, &allocation);

	if (!c)
		return;
	if (out) {
		__sync_fetch_and_add(&c->packets_out, 1);
		__sync_fetch_and_add(&c->bytes_out, bytes);
	} else {
		__sync_fetch_and_add(&c->packets_in, 1);
		__sync_fetch_and_add(&c->bytes_in, bytes);
	}
}

static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/*
 * A rewritten packet leaves through the interface p2pnet looked up for its destination
 * when it wrote the entry; the kernel routes it there and resolves the neighbour (a
 * local destination goes out on the loopback interface and comes back in).
 */
static __always_inline int deliver(__u32 ifindex)
{
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

/* The IPv4 header's checksum, computed anew over its 20 bytes. */
static __always_inline int ip4_rewrite(struct __sk_buff *skb, const __u8 *src,
				       const __u8 *dst, __u16 total)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_LEN;

	if ((void *)(ip + 1) > end)
		return -1;
	__builtin_memcpy(&ip->saddr, src, 4);
	__builtin_memcpy(&ip->daddr, dst, 4);
	ip->tot_len = bpf_htons(total);
	ip->ttl = 64;
	ip->check = 0;
	__u64 sum = 0;
	__u16 *words = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += words[i];
	ip->check = fold(sum);
	return 0;
}

static __always_inline int ip6_rewrite(struct __sk_buff *skb, const __u8 *src,
				       const __u8 *dst, __u16 payload)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + ETH_LEN;

	if ((void *)(ip6 + 1) > end)
		return -1;
	__builtin_memcpy(&ip6->saddr, src, 16);
	__builtin_memcpy(&ip6->daddr, dst, 16);
	ip6->payload_len = bpf_htons(payload);
	ip6->hop_limit = 64;
	return 0;
}

/*
 * The UDP checksum of the rewritten datagram, which IPv6 requires (IPv4 sends 0: no
 * checksum). Computed over the pseudo-header and the whole datagram, MAX_CSUM bytes at
 * most (longer datagrams stay on the Python path).
 */
#define MAX_CSUM 1472
static __always_inline int udp6_checksum(struct __sk_buff *skb, __u32 l4, __u16 udp_len,
					 const __u8 *src, const __u8 *dst)
{
	__u64 sum = 0;
	__u32 i;
	__u16 word;

	for (i = 0; i < 16; i += 2)
		sum += *(__u16 *)(src + i) + *(__u16 *)(dst + i);
	sum += bpf_htons(udp_len) + bpf_htons(IPPROTO_UDP);
	for (i = 0; i < MAX_CSUM; i += 2) {
		if (i + 1 >= udp_len)
			break;
		if (bpf_skb_load_bytes(skb, l4 + i, &word, 2))
			return -1;
		sum += word;
	}
	if (udp_len & 1) {
		__u8 last = 0;

		if (udp_len - 1 < MAX_CSUM && !bpf_skb_load_bytes(skb, l4 + udp_len - 1, &last, 1))
			sum += bpf_htons((__u16)last << 8);
	}
	__u16 check = fold(sum);

	if (check == 0)
		check = 0xffff;
	return bpf_skb_store_bytes(skb, l4 + 6, &check, 2, 0);
}

struct packet {
	int family;
	__u32 l4;		/* offset of the UDP header */
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u16 udp_len;
};

static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;

	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memset(p, 0, sizeof(*p));
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
			return -1;
		if (ip->frag_off & bpf_htons(0x3fff))
			return -1;	/* a fragment */
		p->family = AF_INET;
		__builtin_memcpy(p->src, &ip->saddr, 4);
		__builtin_memcpy(p->dst, &ip->daddr, 4);
		p->l4 = ETH_LEN + IP4_LEN;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_UDP)
			return -1;
		p->family = AF_INET6;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->l4 = ETH_LEN + IP6_LEN;
	} else {
		return -1;
	}
	udp = data + p->l4;
	if ((void *)(udp + 1) > end)
		return -1;
	p->sport = udp->source;
	p->dport = udp->dest;
	p->udp_len = bpf_ntohs(udp->len);
	if (p->udp_len < UDP_LEN || p->l4 + p->udp_len > skb->len)
		return -1;
	return 0;
}

/* The client used the channel, so it has the ChannelBind response: from now on the
 * peer's data may go back to it as ChannelData (the Python path's rule, RFC 8656 §12). */
static __always_inline void confirm(int family, struct fwd_value *v)
{
	struct rev_key key;

	__builtin_memset(&key, 0, sizeof(key));
	__builtin_memcpy(key.peer, v->peer, 16);
	__builtin_memcpy(key.relayed, v->relayed, 16);
	key.peer_port = v->peer_port;
	key.relayed_port = v->relayed_port;
	key.family = family;
	struct rev_value *r = bpf_map_lookup_elem(&rev, &key);

	if (r && !r->confirmed)
		r->confirmed = 1;
}

/* ChannelData from a client: strip the header, send the data to the peer. */
static __always_inline int to_peer(struct __sk_buff *skb, struct packet *p,
				   struct fwd_value *v, __u16 data_len)
{
	__u16 udp_len = UDP_LEN + data_len;

	if (p->family == AF_INET6 && udp_len > MAX_CSUM) {
		count(STAT_TOO_LONG);
		return TC_ACT_UNSPEC;
	}
	struct udphdr udp = {
		.source = v->relayed_port, .dest = v->peer_port, .len = bpf_htons(udp_len),
		.check = 0,
	};
	/* The new UDP header ends where the ChannelData header ended; then the 4 bytes
	 * before it (the old UDP header's first half) are cut out. */
	if (bpf_skb_store_bytes(skb, p->l4 + 4, &udp, UDP_LEN, 0) ||
	    bpf_skb_adjust_room(skb, -4, BPF_ADJ_ROOM_NET, 0)) {
		count(STAT_ADJUST_FAILED);
		return TC_ACT_SHOT;
	}
	if (skb->len > p->l4 + udp_len && bpf_skb_change_tail(skb, p->l4 + udp_len, 0)) {
		count(STAT_ADJUST_FAILED);
		return TC_ACT_SHOT;
	}
	if (p->family == AF_INET) {
		if (ip4_rewrite(skb, v->relayed, v->peer, IP4_LEN + udp_len))
			return TC_ACT_SHOT;
	} else {
		if (ip6_rewrite(skb, v->relayed, v->peer, udp_len) ||
		    udp6_checksum(skb, p->l4, udp_len, v->relayed, v->peer))
			return TC_ACT_SHOT;
	}
	account(v->allocation, data_len, 1);
	count(STAT_FORWARDED_OUT);
	confirm(p->family, v);
	return deliver(v->ifindex);
}

/* A datagram from a peer: prepend the ChannelData header, send it to the client. */
static __always_inline int to_client(struct __sk_buff *skb, struct packet *p,
				     struct rev_value *v)
{
	__u16 data_len = p->udp_len - UDP_LEN;
	__u16 udp_len = UDP_LEN + 4 + data_len;

	if (p->family == AF_INET6 && udp_len > MAX_CSUM)
		return TC_ACT_UNSPEC;
	if (skb->len > p->l4 + p->udp_len &&
	    bpf_skb_change_tail(skb, p->l4 + p->udp_len, 0)) {
		count(STAT_ADJUST_FAILED);
		return TC_ACT_SHOT;
	}
	if (bpf_skb_adjust_room(skb, 4, BPF_ADJ_ROOM_NET, 0)) {
		count(STAT_ADJUST_FAILED);
		return TC_ACT_SHOT;
	}
	struct {
		struct udphdr udp;
		__u16 channel;
		__u16 length;
	} head = {
		.udp = { .source = v->server_port, .dest = v->client_port,
			 .len = bpf_htons(udp_len), .check = 0 },
		.channel = v->channel, .length = bpf_htons(data_len),
	};
	if (bpf_skb_store_bytes(skb, p->l4, &head, sizeof(head), 0))
		return TC_ACT_SHOT;
	if (p->family == AF_INET) {
		if (ip4_rewrite(skb, v->server, v->client, IP4_LEN + udp_len))
			return TC_ACT_SHOT;
	} else {
		if (ip6_rewrite(skb, v->server, v->client, udp_len) ||
		    udp6_checksum(skb, p->l4, udp_len, v->server, v->client))
			return TC_ACT_SHOT;
	}
	account(v->allocation, data_len, 0);
	count(STAT_FORWARDED_IN);
	return deliver(v->ifindex);
}

SEC("tc")
int turn_fastpath(struct __sk_buff *skb)
{
	struct packet p;
	__u64 now;

	/* Headers and the ChannelData header in the linear part. */
	bpf_skb_pull_data(skb, ETH_LEN + IP6_LEN + UDP_LEN + 4);
	if (parse(skb, &p))
		return TC_ACT_UNSPEC;
	now = bpf_ktime_get_ns();

	if (p.udp_len >= UDP_LEN + 4) {
		__u8 head[4];

		if (bpf_skb_load_bytes(skb, p.l4 + UDP_LEN, head, 4))
			return TC_ACT_UNSPEC;
		if ((head[0] & 0xc0) == 0x40) {
			struct fwd_key key;

			__builtin_memset(&key, 0, sizeof(key));
			__builtin_memcpy(key.client, p.src, 16);
			__builtin_memcpy(key.server, p.dst, 16);
			key.client_port = p.sport;
			key.server_port = p.dport;
			__builtin_memcpy(&key.channel, head, 2);
			key.family = p.family;
			struct fwd_value *v = bpf_map_lookup_elem(&fwd, &key);

			if (v) {
				__u16 data_len = ((__u16)head[2] << 8) | head[3];

				if (now >= v->deadline_ns) {
					count(STAT_EXPIRED);
					return TC_ACT_UNSPEC;
				}
				if (UDP_LEN + 4 + data_len > p.udp_len) {
					count(STAT_MALFORMED);
					return TC_ACT_UNSPEC;
				}
				struct fwd_value copy = *v;

				return to_peer(skb, &p, &copy, data_len);
			}
		}
	}
	struct rev_key rkey;

	__builtin_memset(&rkey, 0, sizeof(rkey));
	__builtin_memcpy(rkey.peer, p.src, 16);
	__builtin_memcpy(rkey.relayed, p.dst, 16);
	rkey.peer_port = p.sport;
	rkey.relayed_port = p.dport;
	rkey.family = p.family;
	struct rev_value *r = bpf_map_lookup_elem(&rev, &rkey);

	if (!r)
		return TC_ACT_UNSPEC;
	if (now >= r->deadline_ns) {
		count(STAT_EXPIRED);
		return TC_ACT_UNSPEC;
	}
	if (!r->confirmed)
		return TC_ACT_UNSPEC;	/* a Data indication, from the Python path */
	struct rev_value copy = *r;

	return to_client(skb, &p, &copy);
}

char LICENSE[] SEC("license") = "GPL";

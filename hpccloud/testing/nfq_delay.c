/*
 * nfq_delay: hold every packet of one NFQUEUE queue for a fixed delay, then accept it.
 *
 * Used by hpccloud/testing/netns.py on kernels without sch_netem: an iptables rule
 * on the RECEIVING namespace's INPUT chain (`-s <other region> -j NFQUEUE --queue-num K`)
 * hands the packets here. Delaying on the receiver keeps TCP small queues (which
 * throttle a socket whose packets sit in the sender's qdisc) out of the picture.
 *
 * The delay is constant, so packets leave in arrival order: a FIFO ring of
 * (packet id, release time) is enough; ppoll() sleeps until the next release or the
 * next arriving packet, whichever is first (nanosecond timeout, not poll's ms).
 *
 * usage: nfq_delay QUEUE_NUM DELAY_US READY_FILE
 *   READY_FILE is created once the queue is bound, so the caller knows packets
 *   will no longer be dropped for want of a listener. SIGTERM/SIGINT: accept
 *   every held packet, unbind, exit 0.
 *
 * build: cc -O2 -o nfq_delay nfq_delay.c -lnetfilter_queue
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <libnfnetlink/libnfnetlink.h>

#define RING_SIZE 65536u /* power of two; far above any queue we allow */
#define QUEUE_MAXLEN 16384u

struct held {
	uint32_t id;
	uint64_t release_ns;
};

static struct held ring[RING_SIZE];
static unsigned ring_head, ring_tail; /* head: oldest; tail: next free */
static uint64_t delay_ns;
static volatile sig_atomic_t stop;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
		     void *data)
{
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (ph == NULL)
		return 0;
	uint32_t id = ntohl(ph->packet_id);
	if (ring_tail - ring_head >= RING_SIZE) {
		/* ring full (cannot happen below QUEUE_MAXLEN): pass it on undelayed */
		return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
	}
	ring[ring_tail % RING_SIZE] = (struct held){id, now_ns() + delay_ns};
	ring_tail++;
	return 0;
}

static void release_due(struct nfq_q_handle *qh, uint64_t t)
{
	while (ring_head != ring_tail && ring[ring_head % RING_SIZE].release_ns <= t) {
		nfq_set_verdict(qh, ring[ring_head % RING_SIZE].id, NF_ACCEPT, 0, NULL);
		ring_head++;
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s QUEUE_NUM DELAY_US READY_FILE\n", argv[0]);
		return 2;
	}
	unsigned queue_num = (unsigned)strtoul(argv[1], NULL, 10);
	delay_ns = strtoull(argv[2], NULL, 10) * 1000ull;

	/* wake-ups exactly when a packet is due, not up to 50 us later */
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
	/* on a busy node a normal-priority helper wakes late and the link reads slower than
	 * shaped; it sleeps nearly all the time, so a low real-time priority costs others
	 * nothing. Best effort: without CAP_SYS_NICE it just stays SCHED_OTHER. */
	struct sched_param sp = {.sched_priority = 10};
	sched_setscheduler(0, SCHED_FIFO, &sp);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	struct nfq_handle *h = nfq_open();
	if (h == NULL) {
		perror("nfq_open");
		return 1;
	}
	nfq_unbind_pf(h, AF_INET); /* harmless on current kernels; needed on old ones */
	if (nfq_bind_pf(h, AF_INET) < 0) {
		perror("nfq_bind_pf");
		return 1;
	}
	struct nfq_q_handle *qh = nfq_create_queue(h, (uint16_t)queue_num, on_packet, NULL);
	if (qh == NULL) {
		perror("nfq_create_queue");
		return 1;
	}
	/* only the id is needed: copy 64 bytes of header, not the payload */
	if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 64) < 0) {
		perror("nfq_set_mode");
		return 1;
	}
	nfq_set_queue_maxlen(qh, QUEUE_MAXLEN);
	/* GSO: take GRO'd super-packets whole (no re-segmentation); FAIL_OPEN: if the
	 * queue is ever full, accept rather than drop */
	uint32_t flags = NFQA_CFG_F_GSO | NFQA_CFG_F_FAIL_OPEN;
	if (nfq_set_queue_flags(qh, flags, flags) < 0)
		fprintf(stderr, "nfq_delay: queue flags not supported, continuing\n");

	int fd = nfq_fd(h);
	nfnl_rcvbufsiz(nfq_nfnlh(h), 16u << 20);
	int one = 1;
	setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

	int rfd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (rfd < 0) {
		perror("ready file");
		return 1;
	}
	dprintf(rfd, "%d\n", (int)getpid());
	close(rfd);

	static char buf[1 << 16];
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	while (!stop) {
		struct timespec ts, *tsp = NULL;
		if (ring_head != ring_tail) {
			uint64_t t = now_ns(), due = ring[ring_head % RING_SIZE].release_ns;
			uint64_t wait = due > t ? due - t : 0;
			ts.tv_sec = (time_t)(wait / 1000000000ull);
			ts.tv_nsec = (long)(wait % 1000000000ull);
			tsp = &ts;
		}
		int rc = ppoll(&pfd, 1, tsp, NULL);
		if (rc < 0 && errno != EINTR) {
			perror("ppoll");
			break;
		}
		if (rc > 0 && (pfd.revents & POLLIN)) {
			for (;;) {
				ssize_t n = recv(fd, buf, sizeof buf, 0);
				if (n < 0) {
					if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
						break;
					if (errno == ENOBUFS)
						continue; /* a message was lost; fail-open covers it */
					perror("recv");
					stop = 1;
					break;
				}
				nfq_handle_packet(h, buf, (int)n);
			}
		}
		release_due(qh, now_ns());
	}
	release_due(qh, UINT64_MAX); /* never leave a packet held */
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}

<?php
/**
 * Examples of WordPress events turned into fanout notifications, on by default; turn them
 * off with `add_filter('fanout_event_notifications', '__return_false')`:
 *
 * - a post is published: its author is notified (their channel) and every logged-in user of
 *   the site gets a notification on the site's `broadcast`;
 * - an approved comment is added (through the comment form, the admin, or the REST API,
 *   e.g. the block editor), or a held one approved: the post's author is notified, unless
 *   they wrote the comment.
 *
 * Comments added with plain `wp_insert_comment()` (imports, migrations) notify nobody.
 *
 * Each notification passes through a filter (`fanout_post_published_notification`,
 * `fanout_post_published_broadcast`, `fanout_comment_notification`) where it can be changed,
 * or dropped by returning false.
 *
 * @package Fanout
 */

declare(strict_types=1);

namespace FanoutWP;

if (!defined('ABSPATH')) {
    exit;
}

final class Events
{
    public static function register(): void
    {
        add_action('transition_post_status', [self::class, 'postStatusChanged'], 10, 3);
        add_action('comment_post', [self::class, 'commentPosted'], 10, 2);
        add_action('rest_after_insert_comment', [self::class, 'commentInsertedOverRest'], 10, 3);
        add_action('comment_unapproved_to_approved', [self::class, 'commentApproved']);
    }

    /** Whether to notify: the filter allows it, and no importer is creating content in bulk. */
    private static function enabled(): bool
    {
        if (defined('WP_IMPORTING') && WP_IMPORTING) {
            return false;
        }
        return (bool) apply_filters('fanout_event_notifications', true);
    }

    /** `transition_post_status`: a public post type entering `publish` (not an update of a published post). */
    public static function postStatusChanged(string $newStatus, string $oldStatus, \WP_Post $post): void
    {
        if ($newStatus !== 'publish' || $oldStatus === 'publish' || !self::enabled()) {
            return;
        }
        if (wp_is_post_revision($post) || wp_is_post_autosave($post) || !is_post_type_viewable($post->post_type)) {
            return;
        }
        $title = self::plainTitle($post);
        $url = get_permalink($post) ?: '';
        $author = (int) $post->post_author;

        if ($author > 0) {
            $notification = apply_filters('fanout_post_published_notification', [
                'id' => Channels::siteKey() . '-post-' . $post->ID . '-published',
                /* translators: %s: post title */
                'title' => sprintf(__('Your post “%s” is published', 'fanout'), $title),
                'url' => $url,
                'level' => 'success',
            ], $post);
            if (is_array($notification)) {
                fanout_notify_user($author, $notification);
            }
        }

        $announcement = apply_filters('fanout_post_published_broadcast', [
            'id' => Channels::siteKey() . '-post-' . $post->ID . '-new',
            /* translators: %s: post title */
            'title' => sprintf(__('New: %s', 'fanout'), $title),
            'url' => $url,
            'level' => 'info',
        ], $post);
        if (is_array($announcement)) {
            fanout_broadcast(['broadcast'], $announcement);
        }
    }

    /**
     * `comment_post`: a new comment; only approved ones notify (a held comment notifies when
     * it is approved, through `commentApproved`).
     */
    public static function commentPosted(int $commentId, int|string $approved): void
    {
        if ($approved === 1 || $approved === '1') {
            self::notifyPostAuthor($commentId);
        }
    }

    /**
     * `rest_after_insert_comment`: the REST API inserts comments with wp_insert_comment(),
     * which does not fire `comment_post`.
     */
    public static function commentInsertedOverRest(\WP_Comment $comment, \WP_REST_Request $request, bool $creating): void
    {
        if ($creating && $comment->comment_approved === '1') {
            self::notifyPostAuthor((int) $comment->comment_ID);
        }
    }

    /** `comment_unapproved_to_approved`: a held comment was approved. */
    public static function commentApproved(\WP_Comment $comment): void
    {
        self::notifyPostAuthor((int) $comment->comment_ID);
    }

    /** A post's title as plain text: notifications are rendered as text, not HTML, so entities (&#8220;) must be decoded. */
    private static function plainTitle(\WP_Post $post): string
    {
        return html_entity_decode(wp_strip_all_tags(get_the_title($post)), ENT_QUOTES | ENT_HTML5, 'UTF-8');
    }

    private static function notifyPostAuthor(int $commentId): void
    {
        if (!self::enabled()) {
            return;
        }
        $comment = get_comment($commentId);
        $post = $comment ? get_post((int) $comment->comment_post_ID) : null;
        if (!$comment || !$post) {
            return;
        }
        $author = (int) $post->post_author;
        if ($author <= 0 || $author === (int) $comment->user_id) {
            return; // nobody to tell, or the author commented themselves
        }
        $notification = apply_filters('fanout_comment_notification', [
            'id' => Channels::siteKey() . '-comment-' . $commentId,
            /* translators: 1: comment author, 2: post title */
            'title' => sprintf(__('%1$s commented on “%2$s”', 'fanout'), get_comment_author($comment), self::plainTitle($post)),
            'message' => wp_trim_words(wp_strip_all_tags($comment->comment_content), 20),
            'url' => get_comment_link($comment),
            'level' => 'info',
        ], $comment, $post);
        if (is_array($notification)) {
            fanout_notify_user($author, $notification);
        }
    }
}
